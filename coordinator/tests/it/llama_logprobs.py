"""Per-token log-probabilities from llama.cpp (llama-cpp-python) for the embedded model's test.

Reads {"model": PATH, "tokens": [ids], "start": N} on stdin; evaluates the token ids as they
are (no tokenization, so both engines see the same ids) and prints, as a JSON list, the
natural-log probability of each token from index `start` on given the tokens before it.
Keys and values are kept in f32, as hx keeps them (llama.cpp's default is f16).
"""

import json
import math
import sys

import llama_patch  # noqa: F401  (patches before the model loads)
from llama_cpp import Llama


def main():
    req = json.load(sys.stdin)
    tokens = req["tokens"]
    f32 = 0  # GGML_TYPE_F32
    llm = Llama(model_path=req["model"], n_ctx=2048, n_threads=2, logits_all=True,
                type_k=f32, type_v=f32, verbose=False)
    llm.eval(tokens)
    out = []
    for i in range(req["start"], len(tokens)):
        logits = [float(v) for v in llm.scores[i - 1]]
        top = max(logits)
        lse = top + math.log(sum(math.exp(v - top) for v in logits))
        out.append(logits[tokens[i]] - lse)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
