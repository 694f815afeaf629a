"""What an estimate returns: bytes per device and component, the layer assignment,
and the working behind each figure. Plain frozen dataclasses; ``to_dict`` gives
JSON-serialisable data."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from models_app.estimator.context import ContextParams

COMPONENTS = ("weights", "kv_cache", "compute", "output", "overhead")


@dataclass(frozen=True, slots=True)
class DeviceEstimate:
    """Memory one device needs, by component, in bytes.

    ``buffers`` names the llama.cpp buffers behind the figures (``CPU_Mapped``,
    ``CUDA0``, ``CPU_REPACK`` ...) as they appear in its log.
    """

    device: str  # "CPU" or the GPU's name
    is_gpu: bool
    weights: int
    kv_cache: int
    compute: int
    output: int
    overhead: int
    buffers: dict[str, int]
    layers: tuple[int, ...]  # repeating layers placed here
    free_bytes: int | None = None  # a GPU's free memory, as given

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.output + self.overhead

    def fits(self, margin_bytes: int = 0) -> bool:
        """Total plus ``margin_bytes`` within the free memory (the CPU: no limit given)."""
        return self.free_bytes is None or self.total + margin_bytes <= self.free_bytes

    def component(self, name: str) -> int:
        value: int = getattr(self, name)
        return value


@dataclass(frozen=True, slots=True)
class LayerAssignment:
    """Where llama.cpp puts the layers: ranges per device, the output and input layers."""

    n_layer: int
    n_gpu_layers: int  # resolved: how many of the n_layer + 1 layers are on GPUs
    by_device: dict[str, tuple[int, ...]]
    output_device: str  # output_norm + output (or the tied embeddings' duplicate)
    input_device: str  # token embeddings: always the CPU

    def device_of(self, layer: int) -> str:
        for device, layers in self.by_device.items():
            if layer in layers:
                return device
        raise KeyError(layer)


@dataclass(frozen=True, slots=True)
class Explanation:
    """One line of working: which device and component it explains, and how much."""

    device: str
    component: str  # one of COMPONENTS, or "context" / "placement" / "note"
    bytes: int | None
    text: str

    def __str__(self) -> str:
        amount = "" if self.bytes is None else f" = {format_bytes(self.bytes)}"
        return f"[{self.device}] {self.component}{amount}: {self.text}"


@dataclass(frozen=True, slots=True)
class Estimate:
    """The memory llama.cpp will use for one model and run settings."""

    devices: tuple[DeviceEstimate, ...]  # the GPUs in llama.cpp's order, then the CPU
    assignment: LayerAssignment
    context: ContextParams
    reasons: tuple[
        str, ...
    ]  # why the estimate is approximate (empty: it follows llama.cpp's rules)
    caveats: tuple[str, ...]  # what the figures do not cover or have not been checked against
    explanation: tuple[Explanation, ...]

    @property
    def approximate(self) -> bool:
        return bool(self.reasons)

    @property
    def total(self) -> int:
        return sum(device.total for device in self.devices)

    @property
    def gpu_total(self) -> int:
        return sum(device.total for device in self.devices if device.is_gpu)

    def device(self, name: str) -> DeviceEstimate:
        for device in self.devices:
            if device.device == name:
                return device
        raise KeyError(name)

    @property
    def cpu(self) -> DeviceEstimate:
        return self.device("CPU")

    def fits(self, margin_bytes: int = 0) -> bool:
        """Every GPU's total plus ``margin_bytes`` within its free memory."""
        return all(device.fits(margin_bytes) for device in self.devices if device.is_gpu)

    def explain(self) -> str:
        return "\n".join(str(item) for item in self.explanation)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for device, item in zip(data["devices"], self.devices, strict=True):
            device["total"] = item.total
        data["total"] = self.total
        data["approximate"] = self.approximate
        return data


def format_bytes(size: int) -> str:
    if abs(size) >= 1 << 30:
        return f"{size / (1 << 30):.2f} GiB"
    if abs(size) >= 1 << 20:
        return f"{size / (1 << 20):.2f} MiB"
    if abs(size) >= 1 << 10:
        return f"{size / (1 << 10):.1f} KiB"
    return f"{size} B"
