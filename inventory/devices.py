"""Device order for backends: which GPUs a process sees, and in which order."""

from __future__ import annotations

from collections.abc import Iterable

from inventory.models import Gpu


class DeviceSelectionError(ValueError):
    pass


def device_order(gpus: Iterable[Gpu]) -> list[Gpu]:
    """Higher priority first; equal priorities keep NVML index order."""
    return sorted(gpus, key=lambda g: (-g.priority, g.index))


def cuda_visible_devices(gpus: Iterable[Gpu]) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` value for a backend on these GPUs: UUIDs (stable
    across reboots, unlike indexes) in priority order. Disabled or missing GPUs, GPUs of
    several nodes and duplicates are refused."""
    chosen = list(gpus)
    if not chosen:
        return ""
    problems = [f"{g} is disabled" for g in chosen if not g.enabled]
    problems += [f"{g} is not present" for g in chosen if not g.present]
    if len({g.node_id for g in chosen}) > 1:
        problems.append("GPUs of several nodes cannot serve one backend process")
    if len({g.uuid for g in chosen}) != len(chosen):
        problems.append("a GPU is listed twice")
    if problems:
        raise DeviceSelectionError("; ".join(problems))
    return ",".join(g.uuid for g in device_order(chosen))
