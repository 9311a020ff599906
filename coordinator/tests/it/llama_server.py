"""llama-cpp-python's OpenAI-compatible server (`python3 -m llama_cpp.server ARGS`) with
llama.cpp's extra weight buffers turned off (see llama_patch.py)."""

import sys

import llama_patch  # noqa: F401  (patches before the server loads a model)
from llama_cpp.server.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
