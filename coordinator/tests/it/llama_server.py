"""llama-cpp-python's OpenAI-compatible server (`python3 -m llama_cpp.server ARGS`) with
llama.cpp's extra weight buffers turned off.

The llama.cpp in llama-cpp-python 0.3.36 crashes (SIGSEGV in llama_decode) on the first batch
of more than one token when it repacks Q4_1 weights into its extra CPU buffers, as it does on
CPUs with AMX and AVX-512; the server has no flag for `use_extra_bufts`, so this sets it.
"""

import sys

import llama_cpp.llama_cpp as api

_defaults = api.llama_model_default_params


def _without_extra_buffers():
    params = _defaults()
    params.use_extra_bufts = False
    return params


api.llama_model_default_params = _without_extra_buffers

from llama_cpp.server.__main__ import main  # noqa: E402  (after the patch it must see)

if __name__ == "__main__":
    sys.exit(main())
