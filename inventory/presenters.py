"""Plain-data rows that the full pages and the live events both render from."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypedDict

from django.conf import settings

from inventory.answers import answers
from inventory.models import Gpu


class GpuRow(TypedDict):
    id: str
    node_id: str
    index: int
    name: str
    uuid: str
    utilization: float
    memory_used: int
    memory_total: int
    memory_pct: float
    temperature: float | None
    power_draw: float | None
    power_limit: float
    priority: int
    enabled: bool
    present: bool
    error: str
    sampled_at: float | None
    claimed: int
    usable: int
    load_pct: float
    oom_risk: bool


def memory_load(gpu: Gpu, our_pids: set[int] | None = None) -> int:
    """Bytes claimed by our instances plus those used by processes that are not ours
    (``claimed + foreign``), or what NVML sees in use if that is more."""
    foreign = gpu.foreign_given(our_pids if our_pids is not None else gpu.our_pids())
    return max(gpu.claimed + foreign, gpu.memory_used)


def gpu_row(gpu: Gpu, our_pids: set[int] | None = None) -> GpuRow:
    total = gpu.memory_total or 1
    usable = gpu.usable
    load = memory_load(gpu, our_pids)
    load_pct = round(100 * load / usable, 1) if usable else 100.0
    return {
        "id": str(gpu.id),
        "node_id": str(gpu.node_id),
        "index": gpu.index,
        "name": gpu.name,
        "uuid": gpu.uuid,
        "utilization": gpu.utilization,
        "memory_used": gpu.memory_used,
        "memory_total": gpu.memory_total,
        "memory_pct": round(100 * gpu.memory_used / total, 1),
        "temperature": gpu.temperature,
        "power_draw": gpu.power_draw,
        "power_limit": gpu.power_limit,
        "priority": gpu.priority,
        "enabled": gpu.enabled,
        "present": gpu.present,
        "error": gpu.error,
        "sampled_at": gpu.sampled_at.timestamp() if gpu.sampled_at else None,
        "claimed": gpu.claimed,
        "usable": usable,
        "load_pct": load_pct,
        "oom_risk": load_pct >= 100 * settings.GPUFLEET_OOM_WARN,
    }


def gpu_rows(gpus: Iterable[Gpu]) -> list[GpuRow]:
    """Rows of many GPUs with the pids of our backends looked up once (annotate the
    GPUs ``with_claims()`` to save the claim sum per GPU too)."""
    ours = answers.backend_pids()
    return [gpu_row(gpu, ours) for gpu in gpus]


def gpu_state(row: GpuRow) -> str:
    if not row["present"]:
        return "missing"
    if row["error"]:
        return "error"
    return "enabled" if row["enabled"] else "disabled"
