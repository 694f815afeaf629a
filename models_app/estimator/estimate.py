"""``estimate()``: the memory llama.cpp needs per device for a model and run settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from models_app.estimator import bound
from models_app.estimator.compute import ComputeBuffer, compute_buffers
from models_app.estimator.context import (
    ContextParams,
    context_params,
    kv_tensor_bytes,
    output_buffer_bytes,
    pad,
    reserve_spec,
    token_generation_spec,
)
from models_app.estimator.explain import explain
from models_app.estimator.placement import CPU, Placement, layers_on, place_layers
from models_app.estimator.result import DeviceEstimate, Estimate, Explanation, LayerAssignment
from models_app.estimator.settings import GpuDevice, RunSettings, SplitMode
from models_app.estimator.shape import INEXACT_COMPUTE_FACTOR, EstimatorError, ModelShape, prepare
from models_app.estimator.weights import (
    CPU_ALIGNMENT,
    CUDA_ALIGNMENT,
    WeightBuffers,
    weight_buffers,
)
from models_app.gguf import ModelFacts

KvBytes = dict[int, tuple[int, int]]  # device -> (K bytes, V bytes), padded per tensor


def estimate(
    model: ModelFacts | ModelShape,
    settings: RunSettings | None = None,
    gpus: Sequence[GpuDevice] = (),
) -> Estimate:
    """Bytes per device (each GPU, then the CPU) by component, with the working.

    ``gpus`` may be empty: everything then runs on the CPU, whatever ``n_gpu_layers``.
    """
    settings = settings or RunSettings()
    shape = model if isinstance(model, ModelShape) else prepare(model)
    if shape.mla is not None and settings.type_k is not settings.type_v:
        raise EstimatorError(
            "llama.cpp refuses different K and V cache types for an MLA model (V is part of K)"
        )
    placement = place_layers(shape.n_layer, gpus, settings)
    cparams = context_params(settings, shape.n_ctx_train, causal=not shape.encoder)
    spec = reserve_spec(shape, settings, cparams)
    if shape.encoder:
        spec = bound.encoder_spec(spec)
    weights = weight_buffers(shape, settings, placement)
    kv = (
        {}
        if shape.encoder
        else kv_bytes(shape, bound.kv_settings(shape, settings), cparams, placement)
    )
    if shape.recurrent_bytes:  # an inexact hybrid or recurrent model's state (bound.py)
        kv = _with_recurrent_state(kv, shape, settings, placement, cparams.n_seq_max)
    token_generation = token_generation_spec(spec, cparams)
    specs = [spec] if token_generation is None else [spec, token_generation]
    compute = compute_buffers(shape, settings, specs, placement)
    output = output_buffer_bytes(shape, cparams)
    if settings.embeddings:  # one embedding per output row (llama_context::output_reserve)
        output += shape.n_embd * cparams.n_outputs_max * 4
    if is_bound(shape, settings):  # an upper bound (bound.py)
        compute = {
            device: replace(buffer, size=bound.compute_bound(buffer.size))
            for device, buffer in compute.items()
        }
        output += bound.output_bound(shape, cparams.n_seq_max)
    parts = _Parts(placement, settings, weights, kv, compute, output)
    devices = tuple(_device(parts, device) for device in [*range(len(placement.gpus)), CPU])
    reasons, caveats = estimate_reasons(shape, settings), _caveats(shape, settings, placement)
    assignment = _assignment(shape, placement)
    notes = [Explanation("all", "note", None, text) for text in (*reasons, *caveats)]
    working = (*explain(shape, settings, cparams, spec, assignment, devices, compute), *notes)
    return Estimate(
        devices=devices,
        assignment=assignment,
        context=cparams,
        reasons=reasons,
        caveats=caveats,
        explanation=working,
    )


def kv_bytes(
    shape: ModelShape, settings: RunSettings, cparams: ContextParams, placement: Placement
) -> KvBytes:
    """K and V cache bytes per device: each layer's cache lives with the layer (offload_kqv)."""
    devices = placement.layers if settings.offload_kqv else (CPU,) * shape.n_layer
    uniform = shape.uniform and not shape.has_swa
    totals: dict[int, tuple[int, int]] = {}
    for device in set(devices):
        alignment = CPU_ALIGNMENT if device == CPU else CUDA_ALIGNMENT
        layers = layers_on(devices, device)
        if uniform:
            k, v = kv_tensor_bytes(shape, settings, cparams, layers[0])
            totals[device] = (pad(k, alignment) * len(layers), pad(v, alignment) * len(layers))
            continue
        sizes = [kv_tensor_bytes(shape, settings, cparams, il) for il in layers]
        totals[device] = (
            sum(pad(k, alignment) for k, _v in sizes),
            sum(pad(v, alignment) for _k, v in sizes),
        )
    return totals


def _with_recurrent_state(
    kv: KvBytes, shape: ModelShape, settings: RunSettings, placement: Placement, n_seq: int
) -> KvBytes:
    """``kv`` plus every layer's recurrent state, one per sequence (a bound)."""
    devices = placement.layers if settings.offload_kqv else (CPU,) * shape.n_layer
    totals = dict(kv)
    for device in set(devices):
        k, v = totals.get(device, (0, 0))
        state = shape.recurrent_bytes * n_seq * len(layers_on(devices, device))
        totals[device] = (k + state, v)
    return totals


def _name(placement: Placement, device: int) -> str:
    return "CPU" if device == CPU else placement.gpus[device].name


@dataclass(frozen=True, slots=True)
class _Parts:
    """The figures of all devices, before they are put together per device."""

    placement: Placement
    settings: RunSettings
    weights: WeightBuffers
    kv: KvBytes
    compute: dict[int, ComputeBuffer]
    output: int


def _buffers(parts: _Parts, device: int) -> dict[str, int]:
    """llama.cpp's buffer names for the figures (``CUDA0 KV``, ``CUDA_Host compute`` ...)."""
    name = _name(parts.placement, device)
    host = "CUDA_Host" if parts.placement.gpus else "CPU"  # the first GPU's pinned memory
    own = name if device != CPU else host
    buffers = {
        f"{buffer} model": size for buffer, size in parts.weights.buffers.get(device, {}).items()
    }
    k, v = parts.kv.get(device, (0, 0))
    if k + v:
        buffers[f"{name} KV"] = k + v
    if device in parts.compute and parts.compute[device].size > 1:
        buffers[f"{own} compute"] = parts.compute[device].size
    if device == CPU:
        output_host = "CPU" if parts.placement.output == CPU else host
        buffers[f"{output_host} output"] = parts.output
    return buffers


def _device(parts: _Parts, device: int) -> DeviceEstimate:
    placement, is_gpu = parts.placement, device != CPU
    k, v = parts.kv.get(device, (0, 0))
    return DeviceEstimate(
        device=_name(placement, device),
        is_gpu=is_gpu,
        weights=parts.weights.total(device),
        kv_cache=k + v,
        compute=parts.compute[device].size if device in parts.compute else 0,
        output=0 if is_gpu else parts.output,
        overhead=parts.settings.gpu_overhead_bytes if is_gpu else 0,
        buffers=_buffers(parts, device),
        layers=tuple(placement.layers_on(device)),
        free_bytes=placement.gpus[device].free_bytes if is_gpu else None,
    )


def _assignment(shape: ModelShape, placement: Placement) -> LayerAssignment:
    by_device = {
        _name(placement, device): tuple(placement.layers_on(device))
        for device in [*range(len(placement.gpus)), CPU]
    }
    return LayerAssignment(
        n_layer=shape.n_layer,
        n_gpu_layers=min(placement.n_gpu_layers, shape.n_layer + 1) if placement.gpus else 0,
        by_device=by_device,
        output_device=_name(placement, placement.output),
        input_device="CPU",
    )


EMBEDDINGS_NOTE = (
    "upper bound: embeddings are on and the pooling or classifier graph is not modelled; "
    "compute is counted ×{factor:g} and the output holds an embedding per batch row"
)


def is_bound(shape: ModelShape, settings: RunSettings) -> bool:
    """The estimate is an upper bound, not llama.cpp's figure: no exact graph for the
    architecture, or embeddings on (pooling and classifier heads are not modelled)."""
    return not shape.exact or settings.embeddings


def estimate_reasons(shape: ModelShape, settings: RunSettings) -> tuple[str, ...]:
    """Why an estimate with these settings is approximate (empty: llama.cpp's figures)."""
    reasons = list(shape.notes)
    if settings.embeddings and shape.exact:
        reasons.append(EMBEDDINGS_NOTE.format(factor=INEXACT_COMPUTE_FACTOR))
    if settings.split_mode is SplitMode.ROW:
        reasons.append(
            "row split is estimated like layer split (llama.cpp spreads matrices over all GPUs)"
        )
    return tuple(reasons)


def _caveats(shape: ModelShape, settings: RunSettings, placement: Placement) -> tuple[str, ...]:
    caveats = [
        "the output buffer grows at run time if a batch asks for more than one row of "
        "logits per sequence (all logits of a prompt)",
    ]
    if placement.gpus:
        caveats.append(
            "GPU compute buffers follow ggml-cuda's allocation rules but were not checked "
            "against a GPU run; the CUDA context overhead is a constant "
            f"({settings.gpu_overhead_bytes // 2**20} MiB per GPU); ggml-cuda's memory pool "
            "for temporaries is not counted"
        )
    return tuple(caveats)
