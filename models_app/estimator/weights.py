"""Model weight buffers per device, as ``load_tensors`` in src/llama-model.cpp creates them.

Buffer type of each weight (``select_weight_buft`` with the op it is used by):

- GPU layers: the GPU's own buffer (``CUDA0``): each tensor padded to 128 bytes, and
  quantized tensors whose rows are not a multiple of 512 elements get one partial
  row of padding (ggml-cuda's ``MATRIX_ROW_PADDING``).
- CPU tensors when no GPU takes part: weights of the types the CPU backend repacks,
  used by a 2D MUL_MAT (or 3D MUL_MAT_ID) with ``ne[1] % 8 == 0``, go to a
  ``CPU_REPACK`` buffer; everything else is memory-mapped (``CPU_Mapped``: one
  buffer per file spanning its first to its last CPU tensor, so repacked tensors in
  between count in both buffers, as llama.cpp reports them) or, without mmap,
  allocated in a ``CPU`` buffer (each tensor padded to 32 bytes).
- CPU tensors when GPUs take part: the first GPU's pinned host buffer type comes
  first in the CPU list and accepts every weight, so nothing is repacked; with mmap
  it is swapped for the mapped CPU buffer, without mmap it is ``CUDA_Host``.
- Tied embeddings: the output layer uses ``token_embd`` as a duplicated tensor,
  created again on the output device.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from dataclasses import dataclass

from models_app.estimator.context import pad
from models_app.estimator.ggml import QUANTIZED, row_size
from models_app.estimator.layer_split import CPU, LayerSplit
from models_app.estimator.settings import RunSettings
from models_app.estimator.shape import INPUT_LAYER, ModelShape, Weight

CPU_ALIGNMENT = 32
CUDA_ALIGNMENT = 128
CUDA_MATRIX_ROW_PADDING = 512
_REPACK_ROWS = 8
TIED_OUTPUT = "token_embd.weight (duplicated as the output)"


def cuda_alloc_size(weight: Weight) -> int:
    """``ggml_backend_cuda_buffer_type_get_alloc_size`` for a weight."""
    size = weight.nbytes
    ne0 = weight.ne[0]
    if weight.type in QUANTIZED and ne0 % CUDA_MATRIX_ROW_PADDING:
        size += row_size(weight.type, CUDA_MATRIX_ROW_PADDING - ne0 % CUDA_MATRIX_ROW_PADDING)
    return size


def repackable(weight: Weight, repack_types: frozenset[str]) -> bool:
    """Whether the CPU backend's repack buffer type takes this weight."""
    if weight.type not in repack_types or len(weight.ne) < 2 or weight.ne[1] % _REPACK_ROWS:
        return False
    dims = max((i + 1 for i, dim in enumerate(weight.ne) if dim > 1), default=1)  # ggml_n_dims
    return (weight.op == "MUL_MAT" and dims == 2) or (weight.op == "MUL_MAT_ID" and dims == 3)


@dataclass(frozen=True, slots=True)
class _Group:
    """Weights of one layer (or the input / output layer), summed per buffer kind."""

    cuda: int = 0  # bytes in a GPU buffer
    host: int = 0  # bytes in an allocated host buffer (32-byte padding)
    repack: int = 0  # bytes of the repackable ones (padded)
    rest_host: int = 0  # bytes of the others (padded)
    spans: tuple[tuple[int, int, int], ...] = ()  # (shard, first, last) over all weights
    rest_spans: tuple[tuple[int, int, int], ...] = ()  # same over the non-repackable ones


def _spans(weights: list[Weight]) -> tuple[tuple[int, int, int], ...]:
    ranges: dict[int, list[int]] = {}
    for weight in weights:
        item = ranges.setdefault(weight.shard, [weight.offset, weight.offset + weight.nbytes])
        item[0] = min(item[0], weight.offset)
        item[1] = max(item[1], weight.offset + weight.nbytes)
    return tuple((shard, first, last) for shard, (first, last) in sorted(ranges.items()))


def _group(weights: list[Weight], repack_types: frozenset[str]) -> _Group:
    packed = [weight for weight in weights if repackable(weight, repack_types)]
    rest = [weight for weight in weights if not repackable(weight, repack_types)]
    # a duplicated tensor landing in the buffer that already holds the original is not
    # created again (llama_model_loader::create_tensor): only the host copy is shared
    host = [weight for weight in weights if weight.name != TIED_OUTPUT]
    return _Group(
        cuda=sum(pad(cuda_alloc_size(weight), CUDA_ALIGNMENT) for weight in weights),
        host=sum(pad(weight.nbytes, CPU_ALIGNMENT) for weight in host),
        repack=sum(pad(weight.nbytes, CPU_ALIGNMENT) for weight in packed),
        rest_host=sum(pad(weight.nbytes, CPU_ALIGNMENT) for weight in rest if weight in host),
        spans=_spans(weights),
        rest_spans=_spans(rest),
    )


_GROUPS: OrderedDict[tuple[int, frozenset[str]], tuple[ModelShape, dict[int, _Group]]]
_GROUPS = OrderedDict()


def _groups(shape: ModelShape, repack_types: frozenset[str]) -> dict[int, _Group]:
    """Per-layer sums, computed once per model and host profile."""
    key = (id(shape), repack_types)
    hit = _GROUPS.get(key)
    if hit is not None and hit[0] is shape:
        return hit[1]
    by_layer: defaultdict[int, list[Weight]] = defaultdict(list)
    for weight in shape.weights:
        by_layer[weight.layer].append(weight)
    embd = next((w for w in shape.weights if w.name == "token_embd.weight"), None)
    if shape.tied_embeddings and embd is not None:
        by_layer[shape.n_layer].append(_tied_output(embd, shape.n_layer))
    groups = {layer: _group(weights, repack_types) for layer, weights in by_layer.items()}
    _GROUPS[key] = (shape, groups)
    if len(_GROUPS) > 16:
        _GROUPS.popitem(last=False)
    return groups


def _tied_output(embd: Weight, n_layer: int) -> Weight:
    return Weight(
        TIED_OUTPUT, n_layer, embd.type, embd.ne, embd.nbytes, embd.offset, embd.shard, "MUL_MAT"
    )


@dataclass(frozen=True, slots=True)
class WeightBuffers:
    """Model buffers per device: ``{device: {buffer name: bytes}}``, device CPU = -1."""

    buffers: dict[int, dict[str, int]]

    def total(self, device: int) -> int:
        return sum(self.buffers.get(device, {}).values())


def weight_buffers(
    shape: ModelShape, settings: RunSettings, placement: LayerSplit
) -> WeightBuffers:
    host_only = not placement.gpus
    groups = _groups(shape, settings.host.repack_types if host_only else frozenset())
    on_device: defaultdict[int, list[_Group]] = defaultdict(list)
    devices, last = (*placement.layers, placement.output), len(placement.layers)
    for layer, group in groups.items():  # placement.device_of(layer), the input on the CPU
        on_device[CPU if layer == INPUT_LAYER else devices[min(layer, last)]].append(group)
    buffers: dict[int, dict[str, int]] = {}
    for device, items in on_device.items():
        if device != CPU:
            buffers[device] = {placement.gpus[device].name: sum([item.cuda for item in items])}
        else:
            buffers[CPU] = _host_buffers(items, settings, host_only)
    return WeightBuffers(buffers)


def _host_buffers(groups: list[_Group], settings: RunSettings, host_only: bool) -> dict[str, int]:
    result: dict[str, int] = {}
    repack = sum(group.repack for group in groups) if host_only else 0
    if settings.use_mmap:
        spans = [span for g in groups for span in (g.rest_spans if host_only else g.spans)]
        result["CPU_Mapped"] = _mapped_bytes(spans)
    elif host_only:
        result["CPU"] = sum(group.rest_host for group in groups)
    else:
        result["CUDA_Host"] = sum(group.host for group in groups)
    if repack:
        result["CPU_REPACK"] = repack
    return {name: size for name, size in result.items() if size}


def _mapped_bytes(spans: list[tuple[int, int, int]]) -> int:
    """One mapping per file, from its first to its last CPU tensor."""
    per_shard: dict[int, tuple[int, int]] = {}
    for shard, first, last in spans:
        low, high = per_shard.get(shard, (first, last))
        per_shard[shard] = (min(low, first), max(high, last))
    return sum(high - low for low, high in per_shard.values())
