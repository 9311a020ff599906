#!/usr/bin/env python3
"""The llama.cpp reference for `hx bench model`: the same figures, on the same GGUF, through
llama-cpp-python's low-level API (so Python's overhead is a few calls per step, not per token
of work). Prints one JSON object.

    python3 scripts/bench_llama_cpp.py MODEL.gguf --threads 2

Install the reference with `pip install llama-cpp-python` (it builds llama.cpp from source).
"""

import argparse
import ctypes
import json
import time

import numpy as np
import llama_cpp as L

NOTE = ("Note {salt}. You are in the middle of a room. Looking quickly around you, you see a "
        "cabinet 4, a cabinet 3, a countertop 1, a drawer 2, a fridge 1, a microwave 1, a "
        "sinkbasin 1 and a toaster 1. Your task is to: put a clean apple in fridge. ")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gguf")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=300)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--streams", default="1,4,8,16")
    ap.add_argument("--candidates", type=int, default=10)
    a = ap.parse_args()
    streams = [int(s) for s in a.streams.split(",")]

    L.llama_backend_init()
    mp = L.llama_model_default_params()
    # llama.cpp's extra weight buffers (runtime repacking of Q4_1, AMX) crash this llama.cpp
    # (llama-cpp-python 0.3.36) in llama_decode on CPUs with AMX and AVX-512; off, it runs the
    # plain quantized kernels on every CPU.
    mp.use_extra_bufts = False
    model = L.llama_model_load_from_file(a.gguf.encode(), mp)
    vocab = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab)
    cp = L.llama_context_default_params()
    cp.n_ctx = max(streams) * (16 + a.decode_tokens + 8) + a.prompt_tokens * (a.candidates + 2)
    cp.n_batch = 512
    cp.n_ubatch = 512
    cp.n_seq_max = max(max(streams), a.candidates + 1)
    cp.n_threads = a.threads
    cp.n_threads_batch = a.threads
    ctx = L.llama_init_from_model(model, cp)
    mem = L.llama_get_memory(ctx)

    def tokenize(text):
        buf = (L.llama_token * (len(text) + 16))()
        n = L.llama_tokenize(vocab, text.encode(), len(text.encode()), buf, len(buf), False, True)
        return list(buf[:n])

    salt = [0]

    def fresh(n):
        salt[0] += 1
        t = []
        while len(t) < n:
            t += tokenize(NOTE.format(salt=salt[0]))
        return t[:n]

    batch = L.llama_batch_init(512, 0, cp.n_seq_max)

    def decode(rows):
        """rows: (token, pos, seq, want_logits). Returns the row indexes with logits."""
        out = []
        for start in range(0, len(rows), 512):
            chunk = rows[start:start + 512]
            batch.n_tokens = len(chunk)
            for i, (tok, pos, seq, lg) in enumerate(chunk):
                batch.token[i] = tok
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = lg
            if L.llama_decode(ctx, batch) != 0:
                raise SystemExit("llama_decode failed")
            out.append([i for i, r in enumerate(chunk) if r[3]])
        return out[-1]

    def logits(i):
        p = L.llama_get_logits_ith(ctx, i)
        return np.ctypeslib.as_array(p, shape=(n_vocab,))

    def clear():
        L.llama_memory_clear(mem, True)

    def generate(prompts, n):
        """Greedy-decodes n tokens for each prompt, all sequences in every batch."""
        rows = []
        for s, p in enumerate(prompts):
            rows += [(t, i, s, i == len(p) - 1) for i, t in enumerate(p)]
        idx = decode(rows)
        nxt = [int(np.argmax(logits(i))) for i in idx]
        pos = [len(p) for p in prompts]
        for _ in range(n - 1):
            idx = decode([(nxt[s], pos[s], s, True) for s in range(len(prompts))])
            nxt = [int(np.argmax(logits(i))) for i in idx]
            pos = [q + 1 for q in pos]
        return n * len(prompts)

    clear(); generate([fresh(32)], 8); clear()

    p = fresh(a.prompt_tokens)
    t = time.perf_counter(); decode([(tok, i, 0, i == len(p) - 1) for i, tok in enumerate(p)])
    prompt_tps = len(p) / (time.perf_counter() - t)
    clear()

    t = time.perf_counter(); generate([fresh(16)], 1); first = time.perf_counter() - t; clear()
    t = time.perf_counter(); generate([fresh(16)], a.decode_tokens); total = time.perf_counter() - t
    decode_tps = (a.decode_tokens - 1) / (total - first)
    clear()

    aggregate = []
    for k in streams:
        prompts = [fresh(16) for _ in range(k)]
        t = time.perf_counter(); n = generate(prompts, a.decode_tokens)
        aggregate.append([k, n / (time.perf_counter() - t)])
        clear()

    # Scoring: the prompt once on sequence 0, then every candidate on its own copy of it.
    p = fresh(a.prompt_tokens)
    cands = [tokenize(f"take apple {i + 1} from countertop {i % 3 + 1}") for i in range(a.candidates)]
    t = time.perf_counter()
    last = decode([(tok, i, 0, i == len(p) - 1) for i, tok in enumerate(p)])[0]
    first = logits(last).copy()
    scores = []
    rows = []
    for c, toks in enumerate(cands):
        L.llama_memory_seq_cp(mem, 0, c + 1, -1, -1)
        rows += [(tok, len(p) + i, c + 1, True) for i, tok in enumerate(toks[:-1])]
    idx = decode(rows) if rows else []
    k = 0
    for toks in cands:
        lp = 0.0
        prev = first
        for i, tok in enumerate(toks):
            m = prev.max()
            lp += float(prev[tok] - m - np.log(np.exp(prev - m).sum()))
            if i + 1 < len(toks):
                prev = logits(idx[k]); k += 1
        scores.append(lp)
    score_ms = (time.perf_counter() - t) * 1000

    print(json.dumps({
        "backend": f"llama.cpp {L.__version__} (llama-cpp-python), {a.threads} threads",
        "prompt_tokens_per_s": prompt_tps,
        "decode_tokens_per_s": decode_tps,
        "aggregate_decode": aggregate,
        "score_ms": score_ms,
    }))


if __name__ == "__main__":
    main()
