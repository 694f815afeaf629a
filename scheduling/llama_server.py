"""llama.cpp's ``llama-server`` as a backend: where its binary is, and its command line.

Every flag that changes memory is passed explicitly, so that what runs is what the
estimator sized (``scheduling.fleet.run_settings``) whatever llama-server's defaults:

- ``--ctx-size`` is the whole KV cache, shared by the slots: a deployment's ``n_ctx`` is
  per slot, so it passes ``n_ctx × parallel`` with ``--no-kv-unified`` (each slot its own
  ``n_ctx`` cells, as llama.cpp's ``n_ctx_seq``);
- ``--fit off``: llama-server would otherwise shrink unset settings to the free memory it
  sees, behind placement's back; ``--flash-attn on|off`` (its default is ``auto``);
  batch and micro-batch; K/V types; GPU layers and split; mmap; no full-size SWA cache
  (its default, stated); ``--cache-ram`` (its default is 8 GiB of host RAM) and
  ``--ctx-checkpoints`` (host RAM per slot for sliding-window models), both counted;
- ``--log-verbosity 4``: the only level at which it logs its buffer sizes, which
  ``backend_logs.measured_memory`` reads;
- ``--metrics`` and ``--slots`` for the agent's readings (``scheduling.readings``).

llama-server also reads ``LLAMA_ARG_*`` variables; ``backend.server_env`` drops them.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from scheduling.options import LLAMA_SERVER_FLAGS

if TYPE_CHECKING:
    from scheduling.backend import LaunchSpec

BINARY_ENV = "GPUFLEET_LLAMA_SERVER"
ENV_PREFIX = "LLAMA_ARG_"
HEALTH_PATH = "/health"
CHECKPOINTS_DEFAULT = "0"


def binary() -> Path | None:
    """The llama-server to run: ``$GPUFLEET_LLAMA_SERVER``, else the one the install
    script put beside this Python, else one on ``PATH``; None when there is none."""
    named = os.environ.get(BINARY_ENV, "").strip()
    if named:
        path = Path(named)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    beside = Path(sys.executable).parent / "llama-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("llama-server")
    return Path(found) if found else None


def command(spec: LaunchSpec, executable: Path) -> list[str]:
    """llama-server's argv for a spec. Never a shell; every value its own argument."""
    args = [str(executable), "--model", str(spec.model_path), "--alias", spec.served_name]
    args += ["--host", spec.host, "--port", str(spec.port)]
    args += ["--ctx-size", str(spec.n_ctx * spec.parallel), "--parallel", str(spec.parallel)]
    args += ["--no-kv-unified", "--cont-batching", "--fit", "off"]
    args += ["--batch-size", str(spec.n_batch), "--ubatch-size", str(spec.n_ubatch)]
    args += ["--flash-attn", "on" if spec.flash_attn else "off"]
    args += ["--cache-type-k", spec.type_k, "--cache-type-v", spec.type_v]
    args += _devices(spec)
    args += [] if spec.use_mmap else ["--no-mmap"]  # mmap is its default (no --mmap flag)
    args += ["--cache-ram", str(spec.cache_ram_mib)]
    args += _kind(spec)
    args += ["--metrics", "--slots", "--no-webui", "--log-verbosity", "4"]
    return args + _options(spec.extra_options)


def _devices(spec: LaunchSpec) -> list[str]:
    args = ["--n-gpu-layers", str(spec.n_gpu_layers), "--main-gpu", str(spec.main_gpu)]
    if spec.tensor_split:
        args += ["--split-mode", "layer"]
        args += ["--tensor-split", ",".join(repr(float(part)) for part in spec.tensor_split)]
    return args


def _kind(spec: LaunchSpec) -> list[str]:
    if spec.kind == "reranker":
        return ["--reranking"]
    if spec.kind == "embedding":
        return ["--embedding", *(["--pooling", spec.pooling] if spec.pooling else [])]
    return []


def _options(options: Mapping[str, str]) -> list[str]:
    values = {"ctx_checkpoints": CHECKPOINTS_DEFAULT, **options}
    args: list[str] = []
    for name, value in values.items():
        flag = LLAMA_SERVER_FLAGS[name]
        if value == "true":
            args.append(flag)
        elif value != "false":
            args += [flag, value]
    return args
