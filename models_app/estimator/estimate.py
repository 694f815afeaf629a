"""``estimate()``: the memory llama.cpp needs per device for a model and run settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from models_app.estimator import bound, encoder, recurrent
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
from models_app.estimator.layer_split import CPU, LayerSplit, layers_on, place_layers
from models_app.estimator.result import DeviceEstimate, Estimate, Explanation, LayerAssignment
from models_app.estimator.settings import GpuDevice, RunSettings, SplitMode
from models_app.estimator.shape import EstimatorError, ModelShape, prepare
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
    spec = encoder.pooling_spec(
        reserve_spec(shape, settings, cparams), shape, settings, cparams.n_seq_max
    )
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
    state = recurrent.state_bytes(shape, settings, placement)  # an exact hybrid's RS buffers
    token_generation = token_generation_spec(spec, cparams)
    if token_generation is not None and shape.encoder:  # attends over its own tokens
        token_generation = bound.encoder_spec(token_generation)
    specs = [spec] if token_generation is None else [spec, token_generation]
    compute = compute_buffers(shape, settings, specs, placement)
    output = output_buffer_bytes(shape, cparams)
    if settings.embeddings and shape.exact:  # llama_context::output_reserve(n_seq_max)
        output += encoder.embd_output_bytes(shape, settings, cparams)
    elif settings.embeddings:  # a bound: one embedding per output row
        output += shape.n_embd * cparams.n_outputs_max * 4
    if is_bound(shape, settings):  # an upper bound (bound.py)
        compute = {
            device: replace(buffer, size=bound.compute_bound(buffer.size))
            for device, buffer in compute.items()
        }
        output += bound.output_bound(shape, cparams.n_seq_max)
    parts = _Parts(placement, settings, weights, kv, compute, output, state)
    devices = tuple(_device(parts, device) for device in [*range(len(placement.gpus)), CPU])
    reasons, caveats = estimate_reasons(shape, settings), _caveats(shape, settings, placement)
    caveats += encoder.pooling_caveats(spec)
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
    shape: ModelShape, settings: RunSettings, cparams: ContextParams, placement: LayerSplit
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
    kv: KvBytes, shape: ModelShape, settings: RunSettings, placement: LayerSplit, n_seq: int
) -> KvBytes:
    """``kv`` plus every layer's recurrent state, one per sequence (a bound)."""
    devices = placement.layers if settings.offload_kqv else (CPU,) * shape.n_layer
    totals = dict(kv)
    for device in set(devices):
        k, v = totals.get(device, (0, 0))
        state = shape.recurrent_bytes * n_seq * len(layers_on(devices, device))
        totals[device] = (k + state, v)
    return totals


def _name(placement: LayerSplit, device: int) -> str:
    return "CPU" if device == CPU else placement.gpus[device].name


@dataclass(frozen=True, slots=True)
class _Parts:
    """The figures of all devices, before they are put together per device."""

    placement: LayerSplit
    settings: RunSettings
    weights: WeightBuffers
    kv: KvBytes
    compute: dict[int, ComputeBuffer]
    output: int
    state: dict[int, int]  # a hybrid's recurrent state (RS buffers), counted as KV cache


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
    if parts.state.get(device):
        buffers[f"{name} RS"] = parts.state[device]
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
        kv_cache=k + v + parts.state.get(device, 0),
        compute=parts.compute[device].size if device in parts.compute else 0,
        output=0 if is_gpu else parts.output,
        overhead=parts.settings.gpu_overhead_bytes if is_gpu else 0,
        buffers=_buffers(parts, device),
        layers=tuple(placement.layers_on(device)),
        free_bytes=placement.gpus[device].free_bytes if is_gpu else None,
    )


def _assignment(shape: ModelShape, placement: LayerSplit) -> LayerAssignment:
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


def is_bound(shape: ModelShape, settings: RunSettings) -> bool:
    """The estimate is an upper bound, not llama.cpp's figure: no exact graph for the
    architecture. (Embeddings on are exact: pooling and classifier heads are replayed,
    encoder.py; ``settings`` stays for callers.)"""
    return not shape.exact


def estimate_reasons(shape: ModelShape, settings: RunSettings) -> tuple[str, ...]:
    """Why an estimate with these settings is approximate (empty: llama.cpp's figures)."""
    reasons = list(shape.notes)
    if settings.split_mode is SplitMode.ROW:
        reasons.append(
            "row split is estimated like layer split (llama.cpp spreads matrices over all GPUs)"
        )
    return tuple(reasons)


def _caveats(shape: ModelShape, settings: RunSettings, placement: LayerSplit) -> tuple[str, ...]:
    caveats = [
        "the output buffer grows at run time if a batch asks for more than one row of "
        "logits per sequence (all logits of a prompt)",
    ]
    if settings.embeddings:
        caveats.append(_embeddings_caveat(shape, settings))
    if placement.gpus:
        caveats.append(
            "GPU compute buffers follow ggml-cuda's allocation rules but were not checked "
            "against a GPU run; the CUDA context overhead is a constant "
            f"({settings.gpu_overhead_bytes // 2**20} MiB per GPU); ggml-cuda's memory pool "
            "for temporaries is not counted"
        )
    return tuple(caveats)


def _embeddings_caveat(shape: ModelShape, settings: RunSettings) -> str:
    """With embeddings on every token of a batch is an output (``output_reserve``):
    the host output buffer grows to a row of logits and one of embeddings per token."""
    n_ctx = settings.n_ctx or shape.n_ctx_train or settings.n_batch
    n_batch = settings.n_batch if shape.encoder else min(settings.n_batch, n_ctx)
    per_token = (shape.n_vocab + (shape.n_embd_out or shape.n_embd)) * 4
    return (
        "embeddings: every token of a batch is an output, so the host output buffer grows to "
        f"{per_token * n_batch / 2**20:.1f} MiB for a full batch of {n_batch} tokens"
    )
