"""Refusal reasons by category, bounded so that a fleet of thousands of GPUs still
answers with a screenful."""

from __future__ import annotations

from collections.abc import Sequence

from core.units import GIB, MIB
from scheduling.placement.data import REASON_LIMIT, GpuView, NodeView

GPU_ROOM = "GPUs without room"
MULTI_ROOM = "nodes without room on several GPUs"
PARTIAL_ROOM = "nodes without room for partial offload"
CPU_ROOM = "nodes without RAM for CPU only"
NODE_STATE = "nodes not accepting work"
NODE_LABELS = "nodes without the labels"
NODE_MODEL = "nodes without the model"
GPU_STATE = "unusable GPUs"
CATEGORY_ORDER = (
    GPU_ROOM,
    MULTI_ROOM,
    PARTIAL_ROOM,
    CPU_ROOM,
    NODE_STATE,
    NODE_LABELS,
    NODE_MODEL,
    GPU_STATE,
)


class Reasons:
    """Reason lines by category, bounded: ``REASON_LIMIT`` lines in all, shared fairly
    among categories, then one "… and N more" line per category cut short; notes last."""

    def __init__(self) -> None:
        self._kept: dict[str, list[str]] = {}
        self._counts: dict[str, int] = {}
        self.notes: list[str] = []

    def add(self, category: str, text: str) -> None:
        count = self._counts.get(category, 0)
        self._counts[category] = count + 1
        if count < REASON_LIMIT:
            self._kept.setdefault(category, []).append(text)

    def add_many(self, category: str, texts: Sequence[str], total: int) -> None:
        """``texts``: the first lines of ``total`` ones (the rest are only counted)."""
        for text in texts:
            self.add(category, text)
        self._counts[category] = self._counts.get(category, 0) + total - len(texts)

    def lines(self) -> tuple[str, ...]:
        categories = sorted(self._kept, key=CATEGORY_ORDER.index)
        quotas = _fair_quotas([len(self._kept[name]) for name in categories], REASON_LIMIT)
        out: list[str] = []
        for category, quota in zip(categories, quotas, strict=True):
            out.extend(self._kept[category][:quota])
            rest = self._counts[category] - quota
            if rest > 0:
                out.append(f"… and {rest:,} more {category}")
        return (*out, *self.notes)


def _fair_quotas(sizes: Sequence[int], limit: int) -> list[int]:
    """How many lines each category shows: ``limit`` shared out evenly, unused shares
    passed on to the categories that have more."""
    quotas = [0] * len(sizes)
    left = limit
    while left > 0:
        open_ = [i for i, size in enumerate(sizes) if quotas[i] < size]
        if not open_:
            break
        share = max(left // len(open_), 1)
        for i in open_:
            give = min(share, sizes[i] - quotas[i], left)
            quotas[i] += give
            left -= give
    return quotas


def size_text(size: int) -> str:
    return f"{size / GIB:.1f} GiB" if abs(size) >= GIB else f"{size / MIB:.0f} MiB"


def gpu_label(gpu: GpuView, node: NodeView) -> str:
    return f"GPU {gpu.index} on {node.name}"
