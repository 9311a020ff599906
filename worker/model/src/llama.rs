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
use super::quant::{Attend, Isa, QActs, QMatrix, Team, attend_group, matmul, silu_mul};
use super::tokenizer::Token;

/// Rows of one sequence that attend together (see [`Llama::forward`]): four rows read each key
/// and value once where one row at a time read them four times.
const BLOCK: usize = 4;

/// Rows of the feed-forward's gate per piece handed to a thread.
const GATE_ROWS: usize = 16;

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

/// Keys and values of a run of positions, every layer.
#[derive(Debug, Default, Clone)]
pub struct Kv {
    /// Per layer, per key/value head: keys then values, `head_dim` floats per position each.
    /// One head's keys lie together (not interleaved with the other heads' at each position),
    /// so attention, which reads one head's at a time, reads memory in order (at 700 positions
    /// its kernel took a quarter less time; BENCHMARKS.md, "Attention in 512-bit vectors").
    layers: Vec<Vec<(Vec<f32>, Vec<f32>)>>,
    len: usize,
}

impl Kv {
    /// An empty cache for a model.
    pub fn new(cfg: &Config) -> Kv {
        Kv {
            layers: vec![vec![(Vec::new(), Vec::new()); cfg.kv_heads]; cfg.layers],
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

    /// Appends the first `n` positions of a sequence's segments.
    pub fn extend_from(&mut self, seq: &SeqKv, n: usize) {
        let width = |kv: &Kv| {
            kv.layers
                .first()
                .and_then(|heads| heads.first())
                .map_or(0, |(k, _)| k.len().checked_div(kv.len).unwrap_or(0))
        };
        let mut left = n;
        let segments = seq
            .shared
            .iter()
            .map(|(kv, n)| (&**kv, *n))
            .chain(std::iter::once((&seq.own, seq.own.len)));
        for (kv, len) in segments {
            let take = len.min(left);
            let w = width(kv);
            for (dst, src) in self.layers.iter_mut().zip(&kv.layers) {
                for (dst, src) in dst.iter_mut().zip(src) {
                    dst.0.extend_from_slice(&src.0[..take * w]);
                    dst.1.extend_from_slice(&src.1[..take * w]);
                }
            }
            self.len += take;
            left -= take;
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flatten()
            .map(|(k, v)| 4 * (k.len() + v.len()))
            .sum()
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
            let own = std::mem::replace(&mut self.own, Kv::new(cfg));
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

    fn rms_norm(&self, x: &[f32], w: &[f32], out: &mut Vec<f32>) {
        let d = self.cfg.embd;
        out.clear();
        for row in x.chunks_exact(d) {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
            let k = 1.0 / (ms + self.cfg.eps).sqrt();
            out.extend(row.iter().zip(w).map(|(v, w)| v * k * w));
        }
    }

    /// The rotation's (sine, cosine) at `pos`, one per pair of a head's values: the same for
    /// every head and layer, so computed once per row of a forward pass.
    fn angles(&self, pos: usize, out: &mut Vec<(f32, f32)>) {
        out.extend(self.rope.iter().map(|f| (pos as f32 * f).sin_cos()));
    }

    fn rotate(&self, v: &mut [f32], angles: &[(f32, f32)]) {
        // Adjacent pairs, as GGUF's Llama weights are permuted for.
        for head in v.chunks_exact_mut(self.cfg.head_dim) {
            for (pair, &(s, c)) in head.chunks_exact_mut(2).zip(angles) {
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * c - b * s;
                pair[1] = a * s + b * c;
            }
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
        let half = c.head_dim / 2;
        let mut angles = Vec::with_capacity(n * half);
        for &p in &pos {
            self.angles(p, &mut angles);
        }
        // Attention's blocks: runs of up to BLOCK rows of one sequence, (first row, rows).
        let mut blocks: Vec<(usize, usize)> = Vec::new();
        for (i, r) in rows.iter().enumerate() {
            match blocks.last_mut() {
                Some((first, len)) if *len < BLOCK && rows[*first].seq == r.seq => *len += 1,
                _ => blocks.push((i, 1)),
            }
        }
        for (l, layer) in self.layers.iter().enumerate() {
            // Attention.
            self.rms_norm(&s.x, &layer.attn_norm, &mut s.h);
            s.qa.quantize_into(self.isa, &s.h, n, d);
            matmul(self.isa, &layer.qkv, &s.qa, &mut s.a, team);
            let width = d + 2 * kvd;
            for (i, r) in rows.iter().enumerate() {
                let row = &mut s.a[i * width..(i + 1) * width];
                self.rotate(&mut row[..d + kvd], &angles[i * half..(i + 1) * half]);
                let own = &mut seqs[r.seq].own;
                for (g, (k, v)) in own.layers[l].iter_mut().enumerate() {
                    let at = g * c.head_dim;
                    k.extend_from_slice(&row[d + at..d + at + c.head_dim]);
                    v.extend_from_slice(&row[d + kvd + at..d + kvd + at + c.head_dim]);
                }
            }
            for r in rows {
                seqs[r.seq].own.len += usize::from(l == 0);
            }
            // Each (block of rows, key/value head) attends over its sequence, each row up to
            // its own position, for the query heads that share that key/value head; the pairs
            // are spread over the threads, so one long row still uses every core. A block is
            // up to BLOCK consecutive rows of one sequence (a prompt's chunk), whose keys and
            // values are then read from memory once for all of its rows.
            let segments: Vec<Vec<Runs<'_>>> = seqs
                .iter()
                .map(|q| {
                    (0..c.kv_heads)
                        .map(|g| segments(q, l, g, c.head_dim))
                        .collect()
                })
                .collect();
            let a = &s.a;
            let (hd, hg) = (c.head_dim, group * c.head_dim);
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
            s.b.clear();
            s.b.resize(blocks.len() * c.kv_heads * BLOCK * hg, 0.0);
            let work: usize = pos.iter().map(|p| (p + 1) * c.heads).sum();
            if team.size() > 1 && work >= 1024 {
                team.for_each_chunk_mut(&mut s.b, BLOCK * hg, &attend);
            } else {
                for (i, out) in s.b.chunks_mut(BLOCK * hg).enumerate() {
                    attend(i, out);
                }
            }
            // Back to one row after another, each row's heads in order.
            s.h.clear();
            s.h.resize(n * d, 0.0);
            for (i, out) in s.b.chunks(BLOCK * hg).enumerate() {
                let (b, g) = (i / c.kv_heads, i % c.kv_heads);
                let (first, len) = blocks[b];
                for (k, r) in (first..first + len).enumerate() {
                    s.h[r * d + g * hg..r * d + (g + 1) * hg]
                        .copy_from_slice(&out[k * hg..(k + 1) * hg]);
                }
            }
            s.qa.quantize_into(self.isa, &s.h, n, d);
            matmul(self.isa, &layer.out, &s.qa, &mut s.a, team);
            for (x, y) in s.x.iter_mut().zip(&s.a) {
                *x += y;
            }
            // Feed-forward: down(silu(gate) * up).
            self.rms_norm(&s.x, &layer.ffn_norm, &mut s.h);
            s.qa.quantize_into(self.isa, &s.h, n, d);
            matmul(self.isa, &layer.gate_up, &s.qa, &mut s.a, team);
            // The gate, rows spread over the team (on one thread it was a serial stretch of
            // every layer, with the helpers spinning).
            s.b.clear();
            s.b.resize(n * c.ff, 0.0);
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
            s.qa.quantize_into(self.isa, &s.b, n, c.ff);
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
        self.rms_norm(&picked, &self.out_norm, &mut s.h);
        s.qa.quantize_into(self.isa, &s.h, want.len(), d);
        let out = self.output.as_ref().unwrap_or(&self.embd);
        matmul(self.isa, out, &s.qa, &mut s.a, team);
        &s.a[..want.len() * c.vocab]
    }
}

/// One key/value head's keys and values at one layer, segment by segment.
type Runs<'a> = Vec<(&'a [f32], &'a [f32])>;

/// A sequence's [`Runs`] for one key/value head at one layer.
fn segments(seq: &SeqKv, layer: usize, head: usize, hd: usize) -> Runs<'_> {
    seq.shared
        .iter()
        .map(|(kv, n)| (&**kv, *n))
        .chain(std::iter::once((&seq.own, seq.own.len)))
        .map(|(kv, n)| {
            let (k, v) = &kv.layers[layer][head];
            (&k[..n * hd], &v[..n * hd])
        })
        .collect()
}
