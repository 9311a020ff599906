//! The embedded backend: a GGUF model run in-process on CPU by one engine thread that batches
//! every request in flight.
//!
//! Callers (agent episodes on many threads) tokenize their prompt and send it to the engine.
//! Each engine step gathers one row per decoding sequence plus a bounded number of prompt rows,
//! runs them through the model in one forward pass (weights are read once for all of them),
//! and hands out the logits. Finished sequences leave their keys and values in a prefix cache:
//! a later prompt that starts with the same tokens (the same system prompt and few-shot
//! examples, or the previous step of the same episode) shares them instead of recomputing.
//! A scoring request computes its prompt once and runs every candidate as a fork of it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::gguf::Gguf;
use super::llama::{Config, Kv, Llama, Row, Scratch, SeqKv};
use super::quant::{Isa, Team, log_sum_exp};
use super::template::{CHATML, ChatTemplate};
use super::tokenizer::{Token, Tokenizer};
use super::{
    Error, Finish, GenerateRequest, Generation, Message, ModelBackend, ScoreRequest, Scores, Usage,
};

/// How to run the embedded model.
#[derive(Debug, Clone)]
pub struct Options {
    /// The GGUF file.
    pub gguf: PathBuf,
    /// CPU threads; 0 means one per core.
    pub threads: usize,
    /// Context length in tokens (capped by the model's own).
    pub context: usize,
    /// Prompt tokens computed per engine step at most, so long prompts do not stall decoding.
    pub prefill_chunk: usize,
    /// Tokens kept in the prefix cache at most (about 46 KiB each for SmolLM2-135M).
    pub cache_tokens: usize,
}

impl Options {
    /// Defaults for a model file.
    pub fn new(gguf: impl Into<PathBuf>) -> Options {
        Options {
            gguf: gguf.into(),
            threads: 0,
            context: 8192,
            prefill_chunk: 256,
            cache_tokens: 32_768,
        }
    }
}

enum Job {
    Generate {
        prompt: Vec<Token>,
        max_tokens: usize,
        temperature: f32,
        seed: u64,
        stop: Vec<String>,
        ignore_eos: bool,
        reply: Sender<Result<Generation, Error>>,
    },
    Score {
        prompt: Vec<Token>,
        candidates: Vec<Vec<Token>>,
        reply: Sender<Result<Scores, Error>>,
    },
}

/// The embedded model.
pub struct Embedded {
    tx: Option<Sender<Job>>,
    tokenizer: Arc<Tokenizer>,
    template: ChatTemplate,
    context: usize,
    describe: String,
    path: PathBuf,
    engine: Option<JoinHandle<()>>,
}

impl Embedded {
    /// Loads the model and starts its engine thread.
    pub fn load(options: &Options) -> Result<Embedded, Error> {
        let g = Gguf::load(&options.gguf)?;
        let tokenizer = Arc::new(Tokenizer::from_gguf(&g)?);
        let model = Llama::from_gguf(&g)?;
        let text = |t: Option<i64>| {
            t.and_then(|t| Token::try_from(t).ok())
                .map(|t| tokenizer.decode(&[t]))
                .unwrap_or_default()
        };
        let bos = text(g.int("tokenizer.ggml.bos_token_id").ok());
        let eos = text(Some(i64::from(tokenizer.eos)));
        let source = g.str("tokenizer.chat_template").unwrap_or(CHATML);
        let template = ChatTemplate::new(source, &bos, &eos)?;
        let context = options.context.min(model.cfg.context).max(16);
        let threads = if options.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            options.threads
        };
        let describe = format!(
            "{} ({} layers, {} wide, {:.0} MiB, {threads} threads, {} kernels)",
            options.gguf.display(),
            model.cfg.layers,
            model.cfg.embd,
            model.bytes() as f64 / (1 << 20) as f64,
            model.isa()
        );
        drop(g);
        let (tx, rx) = mpsc::channel();
        let engine = Engine {
            model,
            tokenizer: Arc::clone(&tokenizer),
            team: Team::new(threads),
            prefill_chunk: options.prefill_chunk.max(1),
            cache: PrefixCache {
                entries: Vec::new(),
                budget: options.cache_tokens,
                clock: 0,
            },
            active: Vec::new(),
            scratch: Scratch::default(),
        };
        let handle = std::thread::Builder::new()
            .name("hx-model-engine".into())
            .spawn(move || engine.run(rx))
            .map_err(|e| Error::Request(format!("starting the model engine: {e}")))?;
        Ok(Embedded {
            tx: Some(tx),
            tokenizer,
            template,
            context,
            describe,
            path: options.gguf.clone(),
            engine: Some(handle),
        })
    }

    /// The model file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The prompt tokens for a conversation, with the assistant's turn opened.
    pub fn prompt(&self, messages: &[Message]) -> Result<Vec<Token>, Error> {
        let text = self.template.render(messages)?;
        let tokens = self.tokenizer.encode(&text);
        if tokens.len() >= self.context {
            return Err(Error::ContextFull {
                tokens: Some(tokens.len()),
                context: Some(self.context),
            });
        }
        Ok(tokens)
    }

    fn send(&self, job: Job) -> Result<(), Error> {
        self.tx
            .as_ref()
            .ok_or(Error::Stopped)?
            .send(job)
            .map_err(|_| Error::Stopped)
    }

    /// Generates from prompt tokens directly (benchmarks and raw completions).
    pub fn generate_tokens(
        &self,
        prompt: Vec<Token>,
        request: &GenerateRequest,
    ) -> Result<Generation, Error> {
        if prompt.is_empty() {
            return Err(Error::Request("the prompt is empty".into()));
        }
        if request.max_tokens == 0 {
            return Ok(Generation {
                text: String::new(),
                finish: Finish::Length,
                usage: Usage {
                    prompt_tokens: prompt.len() as u64,
                    ..Usage::default()
                },
            });
        }
        let room = self.context.saturating_sub(prompt.len());
        let (reply, rx) = mpsc::channel();
        self.send(Job::Generate {
            prompt,
            max_tokens: (request.max_tokens as usize).min(room),
            temperature: request.temperature,
            seed: request.seed,
            stop: request.stop.clone(),
            ignore_eos: false,
            reply,
        })?;
        rx.recv().map_err(|_| Error::Stopped)?
    }

    /// Generates exactly `n` tokens greedily, through end-of-turn tokens (benchmarks).
    pub fn decode_exact(&self, prompt: Vec<Token>, n: usize) -> Result<Generation, Error> {
        let (reply, rx) = mpsc::channel();
        self.send(Job::Generate {
            prompt,
            max_tokens: n,
            temperature: 0.0,
            seed: 0,
            stop: Vec::new(),
            ignore_eos: true,
            reply,
        })?;
        rx.recv().map_err(|_| Error::Stopped)?
    }

    /// Scores candidate token sequences after prompt tokens.
    pub fn score_tokens(
        &self,
        prompt: Vec<Token>,
        candidates: Vec<Vec<Token>>,
    ) -> Result<Scores, Error> {
        if prompt.is_empty() || candidates.is_empty() {
            return Err(Error::Request("nothing to score".into()));
        }
        if let Some(c) = candidates
            .iter()
            .find(|c| prompt.len() + c.len() > self.context)
        {
            return Err(Error::ContextFull {
                tokens: Some(prompt.len() + c.len()),
                context: Some(self.context),
            });
        }
        let (reply, rx) = mpsc::channel();
        self.send(Job::Score {
            prompt,
            candidates,
            reply,
        })?;
        rx.recv().map_err(|_| Error::Stopped)?
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.engine.take() {
            let _ = h.join();
        }
    }
}

impl ModelBackend for Embedded {
    fn describe(&self) -> String {
        format!("embedded {}", self.describe)
    }

    fn generate(&self, request: &GenerateRequest) -> Result<Generation, Error> {
        let prompt = self.prompt(&request.messages)?;
        self.generate_tokens(prompt, request)
    }

    fn score(&self, request: &ScoreRequest) -> Result<Scores, Error> {
        let prompt = self.prompt(&request.messages)?;
        let candidates = request
            .candidates
            .iter()
            .map(|c| self.tokenizer.encode(c))
            .collect();
        self.score_tokens(prompt, candidates)
    }
}

/// A sequence being computed: its cache, the tokens it still has to run, and whether every
/// row's logits are wanted (candidates) or only the last one's (prompts, decoding).
struct Lane {
    seq: SeqKv,
    pending: VecDeque<Token>,
    every_row: bool,
    /// Tokens whose keys and values the sequence holds.
    fed: Vec<Token>,
}

enum Work {
    Generate {
        generated: Vec<Token>,
        max_tokens: usize,
        temperature: f32,
        rng: Box<ChaCha8Rng>,
        stop: Vec<String>,
        ignore_eos: bool,
        reply: Sender<Result<Generation, Error>>,
    },
    Score {
        candidates: Vec<Vec<Token>>,
        logprobs: Vec<Vec<f64>>,
        /// The candidates' shared prefixes, computed once each.
        trie: Vec<Segment>,
        /// Which segment each lane after the prompt's computes.
        lane_segment: Vec<usize>,
        /// Rows of logits each segment lane has received.
        progress: Vec<usize>,
        reply: Sender<Result<Scores, Error>>,
    },
}

/// A run of candidate tokens that the same candidates share, in a radix trie of the tokens
/// the candidates feed (all but each one's last): its rows are computed once, and the
/// segments after it fork from its cache.
#[derive(Debug, Clone, PartialEq)]
struct Segment {
    /// The tokens fed, from candidate position `start` on.
    tokens: Vec<Token>,
    start: usize,
    /// The candidates that read each row's logits (they continue past that token).
    readers: Vec<Vec<usize>>,
    /// Segments that continue from this one's end.
    children: Vec<usize>,
}

/// The radix trie of the tokens `candidates` feed, as segments; the roots are the segments
/// with `start == 0`.
fn candidate_trie(candidates: &[Vec<Token>]) -> Vec<Segment> {
    // A plain trie first: node per fed prefix, with the candidates that read its logits.
    struct Node {
        token: Token,
        readers: Vec<usize>,
        children: Vec<usize>,
    }
    let mut nodes: Vec<Node> = Vec::new();
    let mut roots: Vec<usize> = Vec::new();
    for (c, toks) in candidates.iter().enumerate() {
        let fed = toks.len().saturating_sub(1);
        let mut parent: Option<usize> = None;
        for &t in &toks[..fed] {
            let siblings = match parent {
                Some(p) => &nodes[p].children,
                None => &roots,
            };
            let found = siblings.iter().copied().find(|&n| nodes[n].token == t);
            let n = match found {
                Some(n) => n,
                None => {
                    nodes.push(Node {
                        token: t,
                        readers: Vec::new(),
                        children: Vec::new(),
                    });
                    let n = nodes.len() - 1;
                    match parent {
                        Some(p) => nodes[p].children.push(n),
                        None => roots.push(n),
                    }
                    n
                }
            };
            nodes[n].readers.push(c);
            parent = Some(n);
        }
    }
    // Then chains of single children become one segment each.
    let mut segments = Vec::new();
    let mut stack: Vec<(usize, usize, Option<usize>)> =
        roots.iter().map(|&r| (r, 0, None)).collect();
    while let Some((first, start, parent)) = stack.pop() {
        let mut seg = Segment {
            tokens: Vec::new(),
            start,
            readers: Vec::new(),
            children: Vec::new(),
        };
        let mut n = first;
        loop {
            seg.tokens.push(nodes[n].token);
            seg.readers.push(std::mem::take(&mut nodes[n].readers));
            if nodes[n].children.len() == 1 {
                n = nodes[n].children[0];
            } else {
                break;
            }
        }
        let index = segments.len();
        let end = start + seg.tokens.len();
        for &child in nodes[n].children.iter().rev() {
            stack.push((child, end, Some(index)));
        }
        segments.push(seg);
        if let Some(p) = parent {
            let p: &mut Segment = &mut segments[p];
            p.children.push(index);
        }
    }
    segments
}

struct Active {
    lanes: Vec<Lane>,
    work: Work,
    usage: Usage,
    done: bool,
}

struct Entry {
    tokens: Vec<Token>,
    shared: Vec<(Arc<Kv>, usize)>,
    used: u64,
}

struct PrefixCache {
    entries: Vec<Entry>,
    budget: usize,
    clock: u64,
}

impl PrefixCache {
    /// The longest cached prefix of `tokens`, leaving at least one token to compute.
    fn lookup(&mut self, tokens: &[Token]) -> (Vec<(Arc<Kv>, usize)>, usize) {
        self.clock += 1;
        let limit = tokens.len().saturating_sub(1);
        let best = self
            .entries
            .iter_mut()
            .map(|e| {
                let n = e
                    .tokens
                    .iter()
                    .zip(tokens)
                    .take_while(|(a, b)| a == b)
                    .count()
                    .min(limit);
                (n, e)
            })
            .max_by_key(|(n, _)| *n);
        match best {
            Some((n, e)) if n > 0 => {
                e.used = self.clock;
                let view = SeqKv {
                    shared: e.shared.clone(),
                    own: Kv::default(),
                };
                (view.prefix(n), n)
            }
            _ => (Vec::new(), 0),
        }
    }

    fn insert(&mut self, tokens: Vec<Token>, shared: Vec<(Arc<Kv>, usize)>) {
        if tokens.is_empty() || tokens.len() > self.budget {
            return;
        }
        self.clock += 1;
        // An entry this one extends (the same episode's previous step) is superseded.
        self.entries
            .retain(|e| !(e.tokens.len() <= tokens.len() && tokens.starts_with(&e.tokens)));
        self.entries.push(Entry {
            tokens,
            shared,
            used: self.clock,
        });
        while self.entries.iter().map(|e| e.tokens.len()).sum::<usize>() > self.budget {
            let oldest = (0..self.entries.len())
                .min_by_key(|&i| self.entries[i].used)
                .expect("over budget means not empty");
            self.entries.swap_remove(oldest);
        }
    }
}

struct Engine {
    model: Llama,
    tokenizer: Arc<Tokenizer>,
    team: Team,
    prefill_chunk: usize,
    cache: PrefixCache,
    active: Vec<Active>,
    scratch: Scratch,
}

/// Shared-segment chains longer than this are copied into one segment.
const MAX_SEGMENTS: usize = 8;

fn flatten(cfg: &Config, seq: &mut SeqKv) {
    if seq.shared.len() <= MAX_SEGMENTS {
        return;
    }
    let mut kv = Kv::new(cfg);
    let total = seq.shared_len();
    let view = SeqKv {
        shared: std::mem::take(&mut seq.shared),
        own: Kv::default(),
    };
    kv.extend_from(&view, total);
    seq.shared = vec![(Arc::new(kv), total)];
}

fn sample(logits: &[f32], temperature: f32, rng: &mut ChaCha8Rng) -> Token {
    if temperature <= 0.0 {
        let mut best = 0;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        return best as Token;
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = logits
        .iter()
        .map(|&l| f64::from((l - max) / temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut x = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        x -= w;
        if x <= 0.0 {
            return i as Token;
        }
    }
    (weights.len() - 1) as Token
}

impl Engine {
    fn run(mut self, rx: Receiver<Job>) {
        loop {
            if self.active.is_empty() {
                match rx.recv() {
                    Ok(job) => self.admit(job),
                    Err(_) => return,
                }
            }
            while let Ok(job) = rx.try_recv() {
                self.admit(job);
            }
            self.step();
        }
    }

    fn admit(&mut self, job: Job) {
        let cfg = self.model.cfg.clone();
        let (prompt, work) = match job {
            Job::Generate {
                prompt,
                max_tokens,
                temperature,
                seed,
                stop,
                ignore_eos,
                reply,
            } => (
                prompt,
                Work::Generate {
                    generated: Vec::new(),
                    max_tokens,
                    temperature,
                    rng: Box::new(ChaCha8Rng::seed_from_u64(seed)),
                    stop,
                    ignore_eos,
                    reply,
                },
            ),
            Job::Score {
                prompt,
                candidates,
                reply,
            } => {
                let n = candidates.len();
                let trie = candidate_trie(&candidates);
                (
                    prompt,
                    Work::Score {
                        candidates,
                        logprobs: vec![Vec::new(); n],
                        trie,
                        lane_segment: Vec::new(),
                        progress: Vec::new(),
                        reply,
                    },
                )
            }
        };
        let (shared, cached) = self.cache.lookup(&prompt);
        let mut usage = Usage {
            prompt_tokens: prompt.len() as u64,
            cached_tokens: cached as u64,
            completion_tokens: 0,
        };
        if let Work::Score { candidates, .. } = &work {
            usage.prompt_tokens += candidates.iter().map(|c| c.len() as u64).sum::<u64>();
        }
        let lane = Lane {
            seq: SeqKv {
                shared,
                own: Kv::new(&cfg),
            },
            pending: prompt[cached..].iter().copied().collect(),
            every_row: false,
            fed: prompt[..cached].to_vec(),
        };
        self.active.push(Active {
            lanes: vec![lane],
            work,
            usage,
            done: false,
        });
    }

    fn step(&mut self) {
        // Rows: every decoding lane's one token first, then prompt tokens up to the chunk.
        struct Slot {
            active: usize,
            lane: usize,
            take: usize,
        }
        let mut slots = Vec::new();
        let mut budget = self.prefill_chunk;
        for pass in 0..2 {
            for (a, act) in self.active.iter().enumerate() {
                for (l, lane) in act.lanes.iter().enumerate() {
                    let n = lane.pending.len();
                    if n == 0 {
                        continue;
                    }
                    let decoding = n == 1 && !lane.every_row;
                    if (pass == 0) != decoding {
                        continue;
                    }
                    let take = if decoding { 1 } else { n.min(budget) };
                    if take == 0 {
                        continue;
                    }
                    if !decoding {
                        budget -= take;
                    }
                    slots.push(Slot {
                        active: a,
                        lane: l,
                        take,
                    });
                }
            }
        }
        if slots.is_empty() {
            self.active.retain(|a| !a.done);
            return;
        }
        let mut rows = Vec::new();
        for (i, s) in slots.iter().enumerate() {
            let lane = &self.active[s.active].lanes[s.lane];
            let finishes = s.take == lane.pending.len();
            for (k, &t) in lane.pending.iter().take(s.take).enumerate() {
                rows.push(Row {
                    seq: i,
                    token: t,
                    logits: lane.every_row || (finishes && k + 1 == s.take),
                });
            }
        }
        tracing::trace!(rows = rows.len(), sequences = slots.len(), "engine step");
        let logits = {
            let mut seqs: Vec<&mut SeqKv> = Vec::with_capacity(slots.len());
            // Borrow each slot's lane mutably; slots name distinct lanes.
            let mut by_lane: Vec<(usize, usize, &mut SeqKv)> = Vec::new();
            for (a, act) in self.active.iter_mut().enumerate() {
                for (l, lane) in act.lanes.iter_mut().enumerate() {
                    by_lane.push((a, l, &mut lane.seq));
                }
            }
            for s in &slots {
                let at = by_lane
                    .iter()
                    .position(|(a, l, _)| *a == s.active && *l == s.lane)
                    .expect("slot names a lane");
                seqs.push(by_lane.swap_remove(at).2);
            }
            self.model
                .forward(&mut seqs, &rows, &mut self.scratch, &mut self.team)
        };
        // Hand out logits in row order.
        let mut logits = logits.chunks_exact(self.model.cfg.vocab);
        for s in &slots {
            let act = &mut self.active[s.active];
            let lane = &mut act.lanes[s.lane];
            let finishes = s.take == lane.pending.len();
            let mut got = Vec::new();
            for _ in 0..s.take {
                let t = lane.pending.pop_front().expect("taken rows are pending");
                lane.fed.push(t);
                if lane.every_row {
                    got.push(logits.next().expect("a row's logits"));
                }
            }
            if !lane.every_row && finishes {
                got.push(logits.next().expect("the last row's logits"));
            }
            if !got.is_empty() {
                let lane_index = s.lane;
                Self::deliver(
                    &self.model.cfg,
                    self.model.isa(),
                    &self.tokenizer,
                    &mut self.cache,
                    act,
                    lane_index,
                    got,
                );
            }
        }
        self.active.retain(|a| !a.done);
    }

    fn deliver(
        cfg: &Config,
        isa: Isa,
        tokenizer: &Tokenizer,
        cache: &mut PrefixCache,
        act: &mut Active,
        lane: usize,
        got: Vec<&[f32]>,
    ) {
        match &mut act.work {
            Work::Generate {
                generated,
                max_tokens,
                temperature,
                rng,
                stop,
                ignore_eos,
                reply,
            } => {
                let logits = got.last().expect("one row");
                let t = sample(logits, *temperature, rng);
                let mut finish = None;
                if !*ignore_eos && (tokenizer.is_control(t) || t == tokenizer.eos) {
                    finish = Some(Finish::Stop);
                } else {
                    generated.push(t);
                    act.usage.completion_tokens += 1;
                }
                let mut text = tokenizer.decode(generated);
                if let Some(at) = stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                    text.truncate(at);
                    finish = Some(Finish::Stop);
                }
                if finish.is_none() && generated.len() >= *max_tokens {
                    finish = Some(Finish::Length);
                }
                match finish {
                    Some(finish) => {
                        let l = &mut act.lanes[0];
                        l.seq.freeze(cfg);
                        flatten(cfg, &mut l.seq);
                        cache.insert(std::mem::take(&mut l.fed), l.seq.shared.clone());
                        let _ = reply.send(Ok(Generation {
                            text,
                            finish,
                            usage: act.usage,
                        }));
                        act.done = true;
                    }
                    None => act.lanes[0].pending.push_back(t),
                }
            }
            Work::Score {
                candidates,
                logprobs,
                trie,
                lane_segment,
                progress,
                reply,
            } => {
                // Lanes to start: the root segments after the prompt, a segment's children
                // after it.
                let mut fork: Option<(usize, Vec<usize>)> = None;
                if lane == 0 {
                    // The prompt is computed: score every first token.
                    let logits = got.last().expect("one row");
                    let norm = log_sum_exp(isa, logits);
                    for (c, toks) in candidates.iter().enumerate() {
                        if let Some(&t0) = toks.first() {
                            logprobs[c].push(f64::from(logits[t0 as usize]) - norm);
                        }
                    }
                    let prompt = &mut act.lanes[0];
                    prompt.seq.freeze(cfg);
                    flatten(cfg, &mut prompt.seq);
                    cache.insert(prompt.fed.clone(), prompt.seq.shared.clone());
                    let roots = (0..trie.len()).filter(|&i| trie[i].start == 0).collect();
                    fork = Some((0, roots));
                } else {
                    let k = lane - 1;
                    let seg = &trie[lane_segment[k]];
                    for &logits in &got {
                        let row = progress[k];
                        progress[k] += 1;
                        let position = seg.start + row + 1;
                        // One normalizer per row, however many candidates read the row.
                        let readers = &seg.readers[row];
                        if readers.is_empty() {
                            continue;
                        }
                        let norm = log_sum_exp(isa, logits);
                        for &c in readers {
                            let t = candidates[c][position] as usize;
                            logprobs[c].push(f64::from(logits[t]) - norm);
                        }
                    }
                    if act.lanes[lane].pending.is_empty() && !seg.children.is_empty() {
                        act.lanes[lane].seq.freeze(cfg);
                        fork = Some((lane, seg.children.clone()));
                    }
                }
                if let Some((from, segments)) = fork {
                    let shared = act.lanes[from].seq.shared.clone();
                    let fed = act.lanes[from].fed.clone();
                    for i in segments {
                        act.lanes.push(Lane {
                            seq: SeqKv {
                                shared: shared.clone(),
                                own: Kv::new(cfg),
                            },
                            pending: trie[i].tokens.iter().copied().collect(),
                            every_row: true,
                            fed: fed.clone(),
                        });
                        lane_segment.push(i);
                        progress.push(0);
                    }
                }
                let all_done = act.lanes.iter().all(|l| l.pending.is_empty());
                if all_done {
                    let _ = reply.send(Ok(Scores {
                        logprobs: logprobs.iter().map(|l| l.iter().sum()).collect(),
                        per_token: std::mem::take(logprobs),
                        tokens: candidates.iter().map(|c| c.len() as u32).collect(),
                        usage: act.usage,
                    }));
                    act.done = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_candidate_trie_feeds_each_shared_prefix_once() {
        let cands = vec![
            vec![1, 2, 3],
            vec![1, 2, 4],
            vec![1, 5],
            vec![6],
            vec![1, 2, 3],
        ];
        let trie = candidate_trie(&cands);
        // Fed prefixes: [1,2], [1,2], [1], [], [1,2]: one chain of two tokens.
        assert_eq!(trie.len(), 1);
        assert_eq!(trie[0].tokens, [1, 2]);
        assert_eq!(trie[0].readers, [vec![0, 1, 2, 4], vec![0, 1, 4]]);

        let cands = vec![vec![7, 1, 2, 9], vec![7, 1, 3, 9], vec![8, 8]];
        let trie = candidate_trie(&cands);
        let rows: usize = trie.iter().map(|s| s.tokens.len()).sum();
        // 7,1 shared; then 2 and 3 apart; 8 alone: 5 rows instead of 3 + 3 + 1 = 7.
        assert_eq!(rows, 5);
        // Every candidate reads each of its positions after the first exactly once.
        for (c, toks) in cands.iter().enumerate() {
            let mut read = Vec::new();
            for s in &trie {
                for (r, readers) in s.readers.iter().enumerate() {
                    if readers.contains(&c) {
                        read.push(s.start + r + 1);
                    }
                }
            }
            read.sort();
            assert_eq!(read, (1..toks.len()).collect::<Vec<_>>(), "candidate {c}");
        }
        // Children start where their parent ends.
        for s in &trie {
            for &ch in &s.children {
                assert_eq!(trie[ch].start, s.start + s.tokens.len());
            }
        }
    }
}
