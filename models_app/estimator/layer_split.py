"""Which device holds which layer, by llama.cpp's rules (``llama_model_base::load_tensors``
in src/llama-model.cpp and the device selection in src/llama.cpp).

- ``n_gpu_layers`` counts the output layer too: -1 (or ``n_layer + 1``) offloads
  everything, ``n_layer`` keeps the output layer on the CPU. The last
  ``n_gpu_layers`` of the ``n_layer + 1`` layers go to the GPUs:
  ``i_gpu_start = max(n_layer + 1 - n_gpu_layers, 0)``.
- Offloaded layers are spread by the cumulative, normalised ``tensor_split``
  (default: each GPU's free memory): layer ``il`` goes to the first GPU whose split
  point is above ``(il - i_gpu_start) / act_gpu_layers`` (``std::upper_bound``), in
  32-bit floats as llama.cpp computes them.
- The input layer (token embeddings) always stays on the CPU; the output layer goes
  where layer ``n_layer`` would go.
- Split mode ``none`` keeps only ``main_gpu`` (none at all if ``main_gpu < 0``).
"""

from __future__ import annotations

import bisect
import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

from models_app.estimator.settings import GpuDevice, RunSettings, SplitMode

CPU = -1  # device index of the host in a ``LayerSplit``


def f32(value: float) -> float:
    """Round to the nearest 32-bit float (llama.cpp keeps the split points in floats)."""
    result: float = struct.unpack("f", struct.pack("f", value))[0]
    return result


@dataclass(frozen=True, slots=True)
class LayerSplit:
    """Where llama.cpp puts each layer: indices into ``gpus``, or ``CPU``."""

    gpus: tuple[GpuDevice, ...]  # the GPUs llama.cpp uses, in its order
    layers: tuple[int, ...]  # device of each repeating layer
    output: int  # device of the output layer (output_norm, output / tied embeddings)
    split_points: tuple[float, ...]  # cumulative normalised split, one per GPU
    n_gpu_layers: int  # after resolving -1: how many of the n_layer + 1 layers are offloaded

    @property
    def input(self) -> int:
        return CPU

    def device_of(self, layer: int) -> int:
        """Device of a repeating layer, or of the output layer for ``layer == n_layer``."""
        return self.output if layer >= len(self.layers) else self.layers[layer]

    def layers_on(self, device: int) -> list[int]:
        return layers_on(self.layers, device)

    @property
    def full_offload(self) -> bool:
        return bool(self.gpus) and self.n_gpu_layers > len(self.layers)


def layers_on(devices: tuple[int, ...], device: int) -> list[int]:
    """The indices of ``devices`` that are ``device``."""
    count = devices.count(device)
    if not count:
        return []
    first = devices.index(device)
    if devices[first : first + count].count(device) == count:  # one run, as llama.cpp places
        return list(range(first, first + count))
    return [il for il, item in enumerate(devices) if item == device]


def used_gpus(gpus: Sequence[GpuDevice], settings: RunSettings) -> tuple[GpuDevice, ...]:
    """The devices llama.cpp keeps: all of them, or only ``main_gpu`` in split mode none."""
    if settings.split_mode is not SplitMode.NONE or not gpus:
        return tuple(gpus)
    if settings.main_gpu < 0:
        return ()
    if settings.main_gpu >= len(gpus):
        raise ValueError(f"main_gpu {settings.main_gpu} is not one of the {len(gpus)} GPUs")
    return (gpus[settings.main_gpu],)


def split_points(
    gpus: Sequence[GpuDevice], tensor_split: Sequence[float] | None
) -> tuple[float, ...]:
    """Cumulative split points, normalised to end at 1.0 (float32 arithmetic)."""
    parts = [f32(part) for part in (tensor_split or ())][: len(gpus)]
    parts += [0.0] * (len(gpus) - len(parts))
    if all(part == 0.0 for part in parts):
        parts = [f32(float(gpu.free_bytes)) for gpu in gpus]
    points, total = [], 0.0
    for part in parts:
        total = f32(total + part)
        points.append(total)
    if total <= 0.0:
        raise ValueError("the tensor split (or the GPUs' free memory) adds up to zero")
    return tuple(f32(point / total) for point in points)


def resolve_n_gpu_layers(n_gpu_layers: int, n_layer: int) -> int:
    """``llama_model::n_gpu_layers``: a negative value means all layers and the output."""
    return n_gpu_layers if n_gpu_layers >= 0 else n_layer + 1


def place_layers(n_layer: int, gpus: Sequence[GpuDevice], settings: RunSettings) -> LayerSplit:
    """The device of every layer for ``settings`` on ``gpus`` (may be empty: CPU only)."""
    used = used_gpus(gpus, settings)
    n_gpu_layers = resolve_n_gpu_layers(settings.n_gpu_layers, n_layer)
    points = split_points(used, settings.tensor_split) if used else ()
    i_gpu_start = max(n_layer + 1 - n_gpu_layers, 0)
    act_gpu_layers = min(n_gpu_layers, n_layer + 1) if used else 0
    devices = _devices(n_layer + 1, i_gpu_start, act_gpu_layers, points)
    return LayerSplit(
        gpus=used,
        layers=devices[:n_layer],
        output=devices[n_layer],
        split_points=points,
        n_gpu_layers=n_gpu_layers,
    )


def _devices(count: int, start: int, act: int, points: tuple[float, ...]) -> tuple[int, ...]:
    """Devices of layers 0 .. count - 1: the CPU outside [start, start + act), else the
    first GPU whose split point is above ``(il - start) / act`` in 32-bit floats.

    The layer index is exact as a float and a division in doubles rounds to the same
    float32 as llama.cpp's division in floats; ``array("f")`` rounds like ``f32``.
    """
    end = min(start + act, count)
    fractions = array("f", [(il - start) / act for il in range(start, end)])
    offloaded = [bisect.bisect_right(points, fraction) for fraction in fractions]
    return (CPU,) * start + tuple(offloaded) + (CPU,) * (count - end)
