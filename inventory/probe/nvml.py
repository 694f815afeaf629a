"""GPU readings from NVML through nvidia-ml-py (imported as ``pynvml``)."""

from __future__ import annotations

import contextlib
from typing import Any

from inventory.probe.base import GpuInfo, GpuReading, ProbeUnavailable, ProcessUsage


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _cuda_version(raw: int) -> str:
    return f"{raw // 1000}.{(raw % 1000) // 10}" if raw else ""


class NvmlProbe:
    kind = "nvml"

    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError as exc:  # pragma: no cover - dependency of the project
            raise ProbeUnavailable(f"nvidia-ml-py is not installed: {exc}") from exc
        self._nvml: Any = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise ProbeUnavailable(f"No NVIDIA driver found (NVML: {exc}).") from exc
        self._driver = _text(pynvml.nvmlSystemGetDriverVersion())
        self._cuda = _cuda_version(pynvml.nvmlSystemGetCudaDriverVersion())
        count = pynvml.nvmlDeviceGetCount()
        self.message = f"NVML: driver {self._driver}, CUDA {self._cuda}, {count} GPU(s)."

    def _handles(self) -> list[Any]:
        nvml = self._nvml
        return [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]

    def devices(self) -> list[GpuInfo]:
        return [self._info(index, handle) for index, handle in enumerate(self._handles())]

    def _info(self, index: int, handle: Any) -> GpuInfo:
        nvml = self._nvml
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        try:
            power_limit = nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0
        except nvml.NVMLError:
            power_limit = 0.0
        return GpuInfo(
            index=index,
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            name=_text(nvml.nvmlDeviceGetName(handle)),
            memory_total=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
            driver_version=self._driver,
            cuda_version=self._cuda,
            compute_capability=f"{major}.{minor}",
            power_limit=power_limit,
        )

    def read(self) -> list[GpuReading]:
        readings = []
        for index in range(self._nvml.nvmlDeviceGetCount()):
            try:
                handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
                readings.append(self._reading(index, handle))
            except self._nvml.NVMLError as exc:
                readings.append(GpuReading(index=index, uuid="", error=f"NVML: {exc}"))
        return readings

    def _memory(self, handle: Any) -> Any:
        """v2 counts the driver's reserved memory apart from ``used``, as nvidia-smi
        does since driver 510; drivers without v2 give v1, where it is part of used."""
        nvml = self._nvml
        try:
            return nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
        except (nvml.NVMLError, AttributeError):
            return nvml.nvmlDeviceGetMemoryInfo(handle)

    def _reading(self, index: int, handle: Any) -> GpuReading:
        nvml = self._nvml
        memory = self._memory(handle)
        return GpuReading(
            index=index,
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            utilization=float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
            memory_used=int(memory.used),
            memory_total=int(memory.total),
            temperature=float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
            power_draw=self._optional(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),
            processes=self._processes(handle),
        )

    def _optional(self, read: Any) -> float | None:
        try:
            return float(read())
        except self._nvml.NVMLError:
            return None

    def _processes(self, handle: Any) -> tuple[ProcessUsage, ...]:
        nvml = self._nvml
        try:
            procs = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
        except nvml.NVMLError:
            return ()
        return tuple(
            ProcessUsage(pid=int(p.pid), memory_used=int(p.usedGpuMemory or 0)) for p in procs
        )

    def close(self) -> None:
        with contextlib.suppress(self._nvml.NVMLError):
            self._nvml.nvmlShutdown()
