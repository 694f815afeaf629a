"""Load models with llama.cpp (llama-cpp-python's C API) and print what it logged.

Run as a script in a fresh process (it imports nothing from the project)::

    python llama_worker.py '[{"model_path": "...", "n_ctx": 512, ...}, ...]'

For each run it loads the model on the CPU, creates a context with the given
settings, frees both (the teardown logs the exact compute buffer size), and prints
one JSON line ``{"log": "...", "error": null}``. The log is captured through
``llama_log_set``, so it holds llama.cpp's and ggml's messages, debug level included.
"""

from __future__ import annotations

import ctypes
import json
import sys
from typing import Any

import llama_cpp

_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "bf16": 30}
_POOLING = {None: -1, "none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}  # -1: the model's
_LOAD_MODE_NONE = 0
_LOAD_MODE_MMAP = 1


class _Log:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.callback = llama_cpp.llama_log_callback(self._on_message)

    def _on_message(self, _level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
        self.parts.append(text.decode("utf-8", errors="replace"))

    def take(self) -> str:
        text, self.parts = "".join(self.parts), []
        return text


def _model_params(run: dict[str, Any]) -> Any:
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = int(run.get("n_gpu_layers", 0))
    params.load_mode = _LOAD_MODE_MMAP if run.get("use_mmap", True) else _LOAD_MODE_NONE
    return params


def _context_params(run: dict[str, Any]) -> Any:
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = int(run["n_ctx"])
    params.n_batch = int(run.get("n_batch", 2048))
    params.n_ubatch = int(run.get("n_ubatch", 512))
    params.n_seq_max = int(run.get("n_seq_max", 1))
    params.type_k = _TYPES[run.get("type_k", "f16")]
    params.type_v = _TYPES[run.get("type_v", "f16")]
    params.flash_attn_type = 1 if run.get("flash_attn", False) else 0
    params.offload_kqv = bool(run.get("offload_kqv", True))
    params.kv_unified = bool(run.get("kv_unified", False))
    params.swa_full = bool(run.get("swa_full", True))
    params.embeddings = bool(run.get("embeddings", False))
    params.pooling_type = _POOLING[run.get("pooling")]
    params.n_threads = params.n_threads_batch = 1
    return params


def load_once(run: dict[str, Any], log: _Log) -> dict[str, Any]:
    """Load, build a context, free everything; return the log and any error."""
    error = None
    model = llama_cpp.llama_model_load_from_file(run["model_path"].encode(), _model_params(run))
    if not model:
        return {"log": log.take(), "error": "the model failed to load"}
    try:
        ctx = llama_cpp.llama_init_from_model(model, _context_params(run))
        if ctx:
            llama_cpp.llama_free(ctx)
        else:
            error = "the context failed to initialise"
    finally:
        llama_cpp.llama_model_free(model)
    return {"log": log.take(), "error": error}


def main(argv: list[str]) -> int:
    runs = json.loads(argv[1]) if len(argv) > 1 else json.load(sys.stdin)
    log = _Log()
    llama_cpp.llama_log_set(log.callback, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    for run in runs:
        sys.stdout.write(json.dumps(load_once(run, log)) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
