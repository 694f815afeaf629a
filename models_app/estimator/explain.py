"""The working behind an estimate, one ``Explanation`` per figure."""

from __future__ import annotations

from collections.abc import Sequence

from models_app.estimator import bound, recurrent
from models_app.estimator.attention import GraphSpec
from models_app.estimator.compute import ComputeBuffer
from models_app.estimator.context import ContextParams, kv_tensor_bytes, layer_cells
from models_app.estimator.result import DeviceEstimate, Explanation, LayerAssignment, format_bytes
from models_app.estimator.settings import RunSettings
from models_app.estimator.shape import INEXACT_COMPUTE_FACTOR, ModelShape

_WEIGHT_BUFFERS = {
    "CPU_Mapped": "memory-mapped from the file, from its first to its last CPU tensor",
    "CPU_REPACK": "weights the CPU backend re-lays out for its matmul kernels",
    "CPU": "weights read into host memory (no mmap)",
    "CUDA_Host": "weights in pinned host memory (no mmap, a GPU present)",
}


def ranges(layers: Sequence[int]) -> str:
    """``0-3, 7, 9-11`` for [0, 1, 2, 3, 7, 9, 10, 11]."""
    parts: list[str] = []
    start = prev = None
    for layer in [*layers, None]:
        if layer is not None and prev is not None and layer == prev + 1:
            prev = layer
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = layer
    return ", ".join(parts) or "none"


def _context(settings: RunSettings, cparams: ContextParams, spec: GraphSpec) -> list[Explanation]:
    streams = (
        f"one unified cache of {cparams.n_ctx_seq} cells"
        if cparams.n_stream == 1 and cparams.n_seq_max > 1
        else f"{cparams.n_stream} stream(s) of n_ctx_seq = {cparams.n_ctx_seq} cells"
    )
    return [
        Explanation(
            "all",
            "context",
            None,
            f"n_ctx {settings.n_ctx or 'training'} -> {cparams.n_ctx} cells (padded to 256s, "
            f"per sequence when not unified); {cparams.n_seq_max} sequence(s): {streams}",
        ),
        Explanation(
            "all",
            "context",
            None,
            f"worst-case graph reserved: {spec.n_tokens} tokens (n_ubatch {cparams.n_ubatch}), "
            f"{spec.n_outputs} outputs, {spec.n_kv} cells per stream, flash attention "
            f"{'on' if spec.flash_attn else 'off'}",
        ),
    ]


def _placement(assignment: LayerAssignment) -> Explanation:
    parts = [
        f"{device}: layers {ranges(layers)}"
        for device, layers in assignment.by_device.items()
        if layers
    ]
    text = (
        f"{assignment.n_gpu_layers} of {assignment.n_layer + 1} layers offloaded "
        f"(n_layer + the output layer); {'; '.join(parts) or 'no repeating layers'}; "
        f"output layer on {assignment.output_device}; token embeddings on the CPU (always)"
    )
    return Explanation("all", "placement", None, text)


def _weights(device: DeviceEstimate) -> Explanation:
    parts = []
    for name, size in device.buffers.items():
        if name.endswith(" model"):
            buffer = name.removesuffix(" model")
            why = _WEIGHT_BUFFERS.get(
                buffer, "the GPU's buffer, 128-byte aligned, quantized rows padded to 512"
            )
            parts.append(f"{buffer} {format_bytes(size)} ({why})")
    return Explanation(device.device, "weights", device.weights, "; ".join(parts) or "none")


def _kv(
    device: DeviceEstimate,
    shape: ModelShape,
    settings: RunSettings,
    cparams: ContextParams,
    layers: Sequence[int],
) -> Explanation:
    if shape.encoder:
        text = f"none: llama.cpp makes no KV cache for {shape.arch!r} (attention over the batch)"
        return Explanation(device.device, "kv_cache", 0, text)
    if not layers:
        return Explanation(device.device, "kv_cache", 0, "no layers' cache here")
    settings = bound.kv_settings(shape, settings)  # a bound: every layer at full size
    attention = [il for il in layers if not shape.layers[il].recurrent]
    parts = [recurrent.describe_state(shape, cparams.n_seq_max, len(layers) - len(attention))]
    if attention:
        k, v = kv_tensor_bytes(shape, settings, cparams, attention[0])
        cells = layer_cells(shape, settings, cparams, attention[0])
        parts.insert(
            0,
            f"{len(attention)} layer(s) x (K {settings.type_k.value} {format_bytes(k)} + "
            f"V {settings.type_v.value} {format_bytes(v)}): {cells} cells x "
            f"{cparams.n_stream} stream(s) x n_embd_k/v_gqa "
            f"{shape.head_dim_k * shape.layers[attention[0]].n_head_kv} per layer",
        )
    text = "; ".join(part for part in parts if part)
    return Explanation(device.device, "kv_cache", device.kv_cache, text)


def _compute(
    device: DeviceEstimate, buffer: ComputeBuffer | None, shape: ModelShape
) -> Explanation:
    if buffer is None or not device.compute:
        return Explanation(device.device, "compute", 0, "no compute buffer")
    text = (
        "ggml-alloc replayed over the reserved graph (in-place reuse, tensors freed after "
        f"their last use); high-water mark set by {buffer.peak}"
    )
    if not shape.exact:
        text = (
            f"upper bound: the llama-like graph's buffer x {INEXACT_COMPUTE_FACTOR} "
            f"({shape.arch!r} has no exact graph); {text}"
        )
    return Explanation(device.device, "compute", device.compute, text)


def _device_lines(
    device: DeviceEstimate,
    shape: ModelShape,
    settings: RunSettings,
    cparams: ContextParams,
    compute: ComputeBuffer | None,
    kv_layers: Sequence[int],
) -> list[Explanation]:
    lines = [
        _weights(device),
        _kv(device, shape, settings, cparams, kv_layers),
        _compute(device, compute, shape),
    ]
    if not device.is_gpu:
        lines.append(
            Explanation(
                device.device,
                "output",
                device.output,
                f"logits: n_vocab {shape.n_vocab} x {cparams.n_seq_max} sequence(s) x 4 bytes "
                "(output_reserve at context creation)"
                + ("" if shape.exact else f"; a bound: + embeddings, n_embd {shape.n_embd} each")
                + (
                    f"; + one embedding of {shape.n_embd_out or shape.n_embd} floats per sequence"
                    if shape.exact and settings.embeddings
                    else ""
                ),
            )
        )
    else:
        lines.append(
            Explanation(
                device.device,
                "overhead",
                device.overhead,
                "CUDA context, cuBLAS workspace, kernel images (a constant)",
            )
        )
    lines.append(Explanation(device.device, "total", device.total, "sum of the above"))
    return lines


def explain(
    shape: ModelShape,
    settings: RunSettings,
    cparams: ContextParams,
    spec: GraphSpec,
    assignment: LayerAssignment,
    devices: Sequence[DeviceEstimate],
    compute: dict[int, ComputeBuffer],
) -> tuple[Explanation, ...]:
    lines = [*_context(settings, cparams, spec), _placement(assignment)]
    for index, device in enumerate(devices):
        backend = -1 if not device.is_gpu else index
        kv_layers = (
            device.layers
            if settings.offload_kqv
            else (() if device.is_gpu else range(shape.n_layer))
        )
        lines += _device_lines(
            device, shape, settings, cparams, compute.get(backend), list(kv_layers)
        )
    return tuple(lines)
