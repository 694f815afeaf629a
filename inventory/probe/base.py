"""The one interface every GPU probe implements (NVML, simulated, CPU-only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class ProbeUnavailable(Exception):
    """The probe cannot run here (no driver, no library): a normal state, not a crash."""


@dataclass(frozen=True)
class GpuInfo:
    index: int
    uuid: str
    name: str
    memory_total: int
    driver_version: str = ""
    cuda_version: str = ""
    compute_capability: str = ""
    power_limit: float = 0.0


@dataclass(frozen=True)
class ProcessUsage:
    pid: int
    memory_used: int
    name: str = ""


@dataclass(frozen=True)
class GpuReading:
    index: int
    uuid: str
    utilization: float = 0.0
    memory_used: int = 0
    memory_total: int = 0
    temperature: float | None = None
    power_draw: float | None = None
    processes: tuple[ProcessUsage, ...] = field(default_factory=tuple)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


class Probe(Protocol):
    kind: str
    message: str

    def devices(self) -> list[GpuInfo]: ...

    def read(self) -> list[GpuReading]: ...

    def close(self) -> None: ...


class CpuOnlyProbe:
    """No GPUs: the node still registers and heartbeats, and can run CPU backends."""

    kind = "none"

    def __init__(self, message: str = "No GPU probe configured: CPU-only node.") -> None:
        self.message = message

    def devices(self) -> list[GpuInfo]:
        return []

    def read(self) -> list[GpuReading]:
        return []

    def close(self) -> None:
        return None
