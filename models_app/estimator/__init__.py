"""Memory estimator for llama.cpp: plain Python over plain data, no Django.

Given a model's ``ModelFacts`` (models_app.gguf), run settings and the GPUs, it
tells how many bytes each device (each GPU and the host) will hold, split into
weights, KV cache, compute buffer, output buffer and fixed overhead, following
llama.cpp's own rules (the vendored source of llama-cpp-python 0.3.36), and
shows its working::

    facts = load_model_facts(path)
    result = estimate(facts, RunSettings(n_ctx=8192, n_seq_max=4, flash_attn=True),
                      gpus=[GpuDevice("CUDA0", 24 * 2**30)])
    result.device("CUDA0").total, result.assignment.by_device, print(result.explain())

    max_gpu_layers(facts, RunSettings(n_ctx=8192), gpus, margin_bytes=512 * 2**20)
    max_context(facts, RunSettings(n_gpu_layers=-1), gpus)

The compute buffer is found by rebuilding the graph llama.cpp reserves and
replaying ggml-alloc over it (forward.py, attention.py, allocator.py). On the CPU
the figures match llama.cpp's log to the byte; ``devtools/llama_harness.py`` proves it.
"""

from models_app.estimator.context import ContextParams
from models_app.estimator.estimate import estimate
from models_app.estimator.planner import Plan, max_context, max_gpu_layers
from models_app.estimator.result import (
    COMPONENTS,
    DeviceEstimate,
    Estimate,
    Explanation,
    LayerAssignment,
    format_bytes,
)
from models_app.estimator.settings import (
    DEFAULT_GPU_OVERHEAD_BYTES,
    CacheType,
    GpuDevice,
    HostProfile,
    RunSettings,
    SplitMode,
)
from models_app.estimator.shape import EstimatorError, ModelShape, prepare

__all__ = [
    "COMPONENTS",
    "DEFAULT_GPU_OVERHEAD_BYTES",
    "CacheType",
    "ContextParams",
    "DeviceEstimate",
    "Estimate",
    "EstimatorError",
    "Explanation",
    "GpuDevice",
    "HostProfile",
    "LayerAssignment",
    "ModelShape",
    "Plan",
    "RunSettings",
    "SplitMode",
    "estimate",
    "format_bytes",
    "max_context",
    "max_gpu_layers",
    "prepare",
]
