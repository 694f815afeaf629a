"""Choose the GPU probe for this node: NVML, a simulated fleet, or CPU-only."""

from __future__ import annotations

import logging

from django.conf import settings

from inventory.probe.base import (
    CpuOnlyProbe,
    GpuInfo,
    GpuReading,
    Probe,
    ProbeUnavailable,
    ProcessUsage,
)
from inventory.probe.simulated import SimulatedProbe

__all__ = [
    "CpuOnlyProbe",
    "GpuInfo",
    "GpuReading",
    "Probe",
    "ProbeUnavailable",
    "ProcessUsage",
    "SimulatedProbe",
    "get_probe",
]
logger = logging.getLogger(__name__)


def get_probe(node_name: str | None = None) -> Probe:
    """``GPUFLEET_GPU_PROBE``: ``auto`` (simulated if ``GPUFLEET_SIMULATED_GPUS`` is set,
    else NVML, else CPU-only), ``nvml``, ``simulated`` or ``none``."""
    mode = settings.GPUFLEET_GPU_PROBE
    spec = settings.GPUFLEET_SIMULATED_GPUS
    name = node_name or settings.NODE_NAME
    if mode == "simulated" or (mode == "auto" and spec):
        return SimulatedProbe(name, spec or "1xA100-80GB", settings.STATE_DIR)
    if mode == "none":
        return CpuOnlyProbe()
    try:
        from inventory.probe.nvml import NvmlProbe

        return NvmlProbe()
    except ProbeUnavailable as exc:
        if mode == "nvml":
            raise
        logger.info("%s Running CPU-only.", exc)
        return CpuOnlyProbe(f"{exc} Running CPU-only.")
