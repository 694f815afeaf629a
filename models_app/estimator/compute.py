"""Compute buffer sizes: rebuild the worst-case graph ``sched_reserve`` reserves and
replay ggml-alloc over it, per backend.

``sched_reserve`` (src/llama-context.cpp) reserves a prompt graph of
``min(n_ctx, n_ubatch)`` tokens over the whole cache with all of them as outputs,
then a one-token-per-sequence graph, then the prompt graph again; the buffers only
grow, so the prompt graph decides. The size of each backend's buffer is the
allocator's high-water mark.

Speed: every repeating layer adds the same nodes, so when the layers are alike
only the first two and the last of each run of layers on one device are built
(tests/estimator check this against full graphs). Results are cached by what the
built graph depends on (``graph_key``), so placements that only shift runs of
layers, as the planner's n_gpu_layers search does, share them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress
from operator import ne

from models_app.estimator.allocator import AllocSize, GraphAllocator
from models_app.estimator.attention import GraphSpec
from models_app.estimator.context import pad
from models_app.estimator.encoder import build_encoder_graph
from models_app.estimator.forward import DevicePlan, build_graph
from models_app.estimator.ggml import QUANTIZED, Tensor, row_size
from models_app.estimator.layer_split import CPU, LayerSplit
from models_app.estimator.sched import schedule
from models_app.estimator.settings import RunSettings, SplitMode
from models_app.estimator.shape import ENCODER_ARCHITECTURES, ModelShape
from models_app.estimator.weights import CPU_ALIGNMENT, CUDA_ALIGNMENT, CUDA_MATRIX_ROW_PADDING

KEEP_LAYERS = 2  # leading layers kept of each run of alike layers (plus the run's last)
OFFLOAD_MIN_BATCH = 32  # ggml-cuda offloads ops on host weights for batches this big
PIPELINE_COPIES = 4  # GGML_SCHED_MAX_COPIES
_CACHE_SIZE = 256


@dataclass(frozen=True, slots=True)
class ComputeBuffer:
    """One backend's compute buffer and the allocation that set its high-water mark."""

    size: int
    peak: str


_CACHE: OrderedDict[tuple[object, ...], tuple[ModelShape, tuple[ComputeBuffer, ...]]]
_CACHE = OrderedDict()


def cuda_compute_size(tensor: Tensor) -> int:
    """``ggml_backend_cuda_buffer_type_get_alloc_size`` for a compute tensor.

    Flash attention over a quantized cache converts K and V to F16 in space appended
    to its output (the MMA/tile kernels used for prompt batches need it); a V that is
    a view of K (MLA) shares K's copy.
    """
    size = tensor.nbytes
    if tensor.op == "FLASH_ATTN_EXT" and tensor.src[0].ne[1] > 1:
        k, v = tensor.src[1], tensor.src[2]
        v_is_k_view = v.view_src is not None and v.view_src is k.view_src
        for item in (k,) if v_is_k_view else (k, v):
            if item.type != "F16":
                n_elements = item.ne[0] * item.ne[1] * item.ne[2] * item.ne[3]
                size = pad(size, CUDA_ALIGNMENT) + 2 * n_elements
    if tensor.type in QUANTIZED and tensor.ne[0] % CUDA_MATRIX_ROW_PADDING:
        size += row_size(
            tensor.type, CUDA_MATRIX_ROW_PADDING - tensor.ne[0] % CUDA_MATRIX_ROW_PADDING
        )
    return size


def device_plan(placement: LayerSplit, settings: RunSettings, spec: GraphSpec) -> DevicePlan:
    """Backends per layer as ggml_backend_sched assigns them (GPUs first, the CPU last).

    With ``op_offload`` and a batch of at least 32 tokens, ggml-cuda takes the ops of
    layers left on the CPU: they run on the first GPU, reading copies of their
    weights and KV cache; only the cache writes stay on the CPU.
    """
    n_gpu = len(placement.gpus)

    def backend(device: int) -> int:
        return n_gpu if device == CPU else device

    storage = tuple([n_gpu if device == CPU else device for device in placement.layers])
    offload = n_gpu > 0 and settings.op_offload and spec.n_tokens >= OFFLOAD_MIN_BATCH
    compute = tuple([0 if item == n_gpu else item for item in storage]) if offload else storage
    kv = storage if settings.offload_kqv else (n_gpu,) * len(storage)
    pinned = not settings.offload_kqv and not spec.flash_attn and n_gpu > 0
    output = backend(placement.output)
    return DevicePlan(
        compute=compute,
        weights=storage,
        kv=kv,
        core=(n_gpu if pinned else None,) * len(storage),
        input=n_gpu,
        output=0 if output == n_gpu and offload else output,
        output_weights=output,
    )


def layers_to_build(plan: DevicePlan, uniform: bool) -> list[int]:
    """All layers, or the first KEEP_LAYERS and the last of each run on one device."""
    n_layer = len(plan.compute)
    if not uniform:
        return list(range(n_layer))
    keys = list(zip(plan.compute, plan.weights, plan.kv, plan.core, strict=True))
    ends = [*compress(range(1, n_layer), map(ne, keys[1:], keys)), n_layer]  # where runs end
    chosen: list[int] = []
    start = 0
    for end in ends:
        run = range(start, end)
        chosen += run[:KEEP_LAYERS]
        if len(run) > KEEP_LAYERS:
            chosen.append(run[-1])
        start = end
    return chosen


def n_copies(placement: LayerSplit, settings: RunSettings) -> int:
    """Pipeline parallelism (several GPUs, everything offloaded, layer split) copies inputs."""
    parallel = (
        len(placement.gpus) > 1
        and placement.full_offload
        and settings.split_mode is SplitMode.LAYER
        and settings.offload_kqv
    )
    return PIPELINE_COPIES if parallel else 1


def compute_buffers(
    shape: ModelShape,
    settings: RunSettings,
    specs: Sequence[GraphSpec],
    placement: LayerSplit,
) -> dict[int, ComputeBuffer]:
    """Compute buffers per device (placement indices; ``CPU`` for the host).

    ``specs``: the graphs reserved one after the other; a buffer only ever grows,
    so each ends up as big as the biggest graph needs it.
    """
    result: dict[int, ComputeBuffer] = {}
    for spec in specs:
        for device, buffer in _buffers(shape, settings, spec, placement).items():
            if device not in result or buffer.size > result[device].size:
                result[device] = buffer
    return result


def _buffers(
    shape: ModelShape, settings: RunSettings, spec: GraphSpec, placement: LayerSplit
) -> dict[int, ComputeBuffer]:
    plan = device_plan(placement, settings, spec)
    n_gpu, copies = len(placement.gpus), n_copies(placement, settings)
    layer_ids = layers_to_build(plan, shape.uniform)
    key = graph_key(shape, spec, plan, layer_ids, n_gpu, copies)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is shape:
        sizes = hit[1]
    else:
        sizes = _simulate(shape, spec, plan, layer_ids, n_gpu, copies)
        _CACHE[key] = (shape, sizes)
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return {(CPU if backend == n_gpu else backend): size for backend, size in enumerate(sizes)}


def graph_key(
    shape: ModelShape,
    spec: GraphSpec,
    plan: DevicePlan,
    layer_ids: Sequence[int],
    n_gpu: int,
    copies: int,
) -> tuple[object, ...]:
    """Everything the simulated graph depends on, and so the compute buffers.

    A built layer depends on its backends, its shape, its weights' types and whether
    it is the last layer; its index only names tensors. Placements that shift runs
    of layers (the planner's n_gpu_layers search) can so share a result.
    """
    last = shape.n_layer - 1
    layers = tuple(
        (
            plan.compute[il],
            plan.weights[il],
            plan.kv[il],
            plan.core[il],
            shape.layers[il],
            shape.layer_types[il],
            il == last,
        )
        for il in layer_ids
    )
    devices = (plan.input, plan.output, plan.output_weights)
    return (id(shape), spec, n_gpu, copies, devices, layers)


def _simulate(
    shape: ModelShape,
    spec: GraphSpec,
    plan: DevicePlan,
    layer_ids: Sequence[int],
    n_gpu: int,
    copies: int,
) -> tuple[ComputeBuffer, ...]:
    encoder = shape.exact and shape.arch in ENCODER_ARCHITECTURES
    graph = (build_encoder_graph if encoder else build_graph)(shape, spec, layer_ids, plan)
    if n_gpu:
        graph = schedule(graph, copies)
    alignments = [CUDA_ALIGNMENT] * n_gpu + [CPU_ALIGNMENT]
    sizes: list[AllocSize] = [cuda_compute_size] * n_gpu
    allocator = GraphAllocator(alignments, [*sizes, None])
    totals = allocator.run(graph, fresh=True)
    return tuple(
        ComputeBuffer(size, _describe(peak))
        for size, peak in zip(totals, allocator.peaks, strict=True)
    )


def _describe(tensor: Tensor | None) -> str:
    if tensor is None:
        return "nothing allocated"
    dims = ", ".join(str(dim) for dim in tensor.ne)
    return f"{tensor.op} {tensor.type} [{dims}] ({tensor.nbytes / 2**20:.2f} MiB)"
