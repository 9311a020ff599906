"""Turns off llama.cpp's extra weight buffers for every llama_cpp model loaded after import.

The llama.cpp in llama-cpp-python 0.3.36 crashes (SIGSEGV in llama_decode) on the first batch
of more than one token when it repacks Q4_1 weights into its extra CPU buffers, as it does on
CPUs with AMX and AVX-512. Neither the server nor `Llama` has a flag for `use_extra_bufts`, so
this sets it in the default model parameters they both start from.
"""

import llama_cpp.llama_cpp as api

_defaults = api.llama_model_default_params


def _without_extra_buffers():
    params = _defaults()
    params.use_extra_bufts = False
    return params


api.llama_model_default_params = _without_extra_buffers
