"""Device order for backends: which GPUs a process sees, and in which order."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from inventory.models import Gpu


class DeviceSelectionError(ValueError):
    pass


def device_order(gpus: Iterable[Gpu]) -> list[Gpu]:
    """Higher priority first; equal priorities keep NVML index order."""
    return sorted(gpus, key=lambda g: (-g.priority, g.index))


def selection_problems(gpus: Sequence[Gpu]) -> list[str]:
    """Why these GPUs cannot serve one backend process (empty: they can)."""
    problems = [f"{g} is disabled" for g in gpus if not g.enabled]
    problems += [f"{g} is not present" for g in gpus if not g.present]
    if len({g.node_id for g in gpus}) > 1:
        problems.append("GPUs of several nodes cannot serve one backend process")
    if len({g.uuid for g in gpus}) != len(gpus):
        problems.append("a GPU is listed twice")
    return problems


def cuda_visible_devices(gpus: Iterable[Gpu]) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` value for a backend on these GPUs: UUIDs (stable
    across reboots, unlike indexes) in priority order. Disabled or missing GPUs, GPUs of
    several nodes and duplicates are refused."""
    chosen = list(gpus)
    if not chosen:
        return ""
    problems = selection_problems(chosen)
    if problems:
        raise DeviceSelectionError("; ".join(problems))
    return ",".join(g.uuid for g in device_order(chosen))
