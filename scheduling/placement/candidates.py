"""Candidates: the nodes that may take an instance, with their usable GPUs worked out
once, and the ``Memo`` that keeps them across calls."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from scheduling.placement.data import LEFT_STEP, GpuView, NodeView, Policy, Request
from scheduling.placement.reasons import (
    GPU_STATE,
    NODE_LABELS,
    NODE_MODEL,
    NODE_STATE,
    Reasons,
    gpu_label,
)

Slot = tuple[GpuView, int]  # a usable GPU and its free bytes
Key = tuple[object, ...]  # a ranking key: smaller is better


@dataclass(slots=True)
class Candidate:
    """A node that may take the instance, with its usable GPUs worked out once.

    ``usable`` and ``frees`` are parallel (as the node lists its GPUs); ``usable`` is
    the node's own tuple when every GPU is usable, so that the common case allocates
    one tuple per node, not one per GPU."""

    node: NodeView
    usable: tuple[GpuView, ...]
    frees: tuple[int, ...]
    rank: int  # 0: holds the model, 1: needs a download
    uniform: bool  # all usable GPUs have the same priority
    _gpus: tuple[Slot, ...] | None = None
    _by_free: tuple[Slot, ...] | None = None
    _sorted_frees: list[int] | None = None
    _single: dict[tuple[int, Policy], tuple[int, Key | None]] | None = None

    def best_single(self, need: int, policy: Policy) -> tuple[int, Key | None]:
        """This node's best GPU for one-GPU placement and its ranking key (None: no GPU
        has room), remembered: a ``Memo`` keeps candidates across calls."""
        if self._single is None:
            self._single = {}
        cache_key = (need, policy)
        found = self._single.get(cache_key)
        if found is None:
            spread = policy is Policy.SPREAD
            position = _best_single(self.usable, self.frees, need, spread)
            key: Key | None = None
            if position >= 0:
                gpu, node = self.usable[position], self.node
                left = (self.frees[position] - need) // LEFT_STEP  # noise does not decide
                by_policy = (node.replicas_here, -left) if spread else (left,)
                key = (self.rank, -gpu.priority, *by_policy, node.name, node.id, gpu.index)
            found = self._single[cache_key] = (position, key)
        return found

    @property
    def gpus(self) -> tuple[Slot, ...]:
        """The usable GPUs with their free bytes."""
        if self._gpus is None:
            self._gpus = tuple(zip(self.usable, self.frees, strict=True))
        return self._gpus

    @property
    def by_free(self) -> tuple[Slot, ...]:
        """The usable GPUs, most free first (ties: device order)."""
        if self._by_free is None:
            order = sorted(self.gpus, key=lambda slot: (-slot[1], *_device_order(slot)))
            self._by_free = tuple(order)
        return self._by_free

    def top(self, count: int) -> tuple[Slot, ...]:
        """The ``count`` GPUs with the most free memory, in device order."""
        return tuple(sorted(self.by_free[:count], key=_device_order))

    @property
    def sorted_frees(self) -> list[int]:
        """The usable GPUs' free bytes, most first (cheaper than ``by_free``)."""
        if self._sorted_frees is None:
            self._sorted_frees = sorted(self.frees, reverse=True)
        return self._sorted_frees

    def min_gpus(self, need: int, limit: int) -> int | None:
        """The fewest GPUs (most free first) whose free adds up to ``need``, at most ``limit``."""
        total = 0
        for count, free in enumerate(self.sorted_frees[:limit], start=1):
            total += free
            if total >= need:
                return count
        return None

    def min_priority(self, count: int) -> int:
        """The lowest priority among the ``count`` GPUs with the most free memory."""
        if self.uniform:
            return self.usable[0].priority
        return lowest_priority(self.by_free[:count])


def _device_order(slot: Slot) -> tuple[int, int]:
    return (-slot[0].priority, slot[0].index)


def _node_refusal(node: NodeView, request: Request) -> tuple[str, str] | None:
    """Why a node cannot be a candidate (category, text), or None."""
    if not node.accepts_work:
        state = "in maintenance" if node.status == "maintenance" else node.status
        if state == "online":
            state = "not accepting work"
        return NODE_STATE, f"{node.name} is {state}"
    for key, value in request.node_labels.items():
        have = node.labels.get(key)
        if have != value:
            text = "lacks label" if have is None else f"has {key}={have}, not"
            return NODE_LABELS, f"{node.name} {text} {key}={value}"
    if not (node.has_model or node.can_download):
        return NODE_MODEL, f"{node.name} has no copy of the model and cannot download it"
    return None


def _gpu_refusal(gpu: GpuView, node: NodeView, request: Request) -> str | None:
    """Why a GPU of a candidate node gets no work, or None."""
    if gpu.id in request.exclude_gpus:
        return f"{gpu_label(gpu, node)} is excluded by the request"
    if not gpu.enabled:
        return f"{gpu_label(gpu, node)} is disabled"
    if not gpu.present:
        return f"{gpu_label(gpu, node)} is missing"
    if gpu.error:
        return f"{gpu_label(gpu, node)} reports an error: {gpu.error}"
    return None


class _Sink(Protocol):
    def add(self, category: str, text: str) -> None: ...


class _Recorded:
    """Reasons recorded to be replayed into each ``place`` call that reuses them."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, category: str, text: str) -> None:
        self.items.append((category, text))


class Memo:
    """What ``place`` may reuse across calls for one request (e.g. a placement pass):
    each node's candidate and the reasons found on the way, keyed by the identity of
    the node's view. Views are frozen and a pass replaces the view of a node it claims
    on, so only that node is worked out again. A memo used with another request
    starts over."""

    def __init__(self) -> None:
        self.request: Request | None = None
        self._nodes: dict[int, tuple[NodeView, Candidate | None, list[tuple[str, str]]]] = {}

    def candidates(
        self, nodes: Sequence[NodeView], request: Request, reasons: Reasons
    ) -> list[Candidate]:
        if request != self.request:
            self.request, self._nodes = request, {}
        found: list[Candidate] = []
        for node in nodes:
            entry = self._nodes.get(id(node))
            if entry is None or entry[0] is not node:
                recorded = _Recorded()
                entry = (node, _node_candidate(node, request, recorded), recorded.items)
                self._nodes[id(node)] = entry
            for category, text in entry[2]:
                reasons.add(category, text)
            if entry[1] is not None:
                found.append(entry[1])
        return found


def _node_candidate(node: NodeView, request: Request, reasons: _Sink) -> Candidate | None:
    refusal = _node_refusal(node, request)
    if refusal is not None:
        reasons.add(*refusal)
        return None
    return _candidate(node, request, reasons)


def _candidate(node: NodeView, request: Request, reasons: _Sink) -> Candidate:
    only, excluded = request.only_gpus, request.exclude_gpus
    usable: list[GpuView] = []
    frees: list[int] = []
    priority, uniform = None, True
    for gpu in node.gpus:  # the hot loop: GpuView.free and the checks inlined
        if only and gpu.id not in only:
            continue
        if gpu.enabled and gpu.present and not gpu.error and gpu.id not in excluded:
            unclaimed = gpu.total - gpu.reserved - gpu.claimed - gpu.foreign
            seen = gpu.observed_free - gpu.reserved
            free = unclaimed if unclaimed < seen else seen
            usable.append(gpu)
            frees.append(free if free > 0 else 0)
            if priority is None:
                priority = gpu.priority
            elif gpu.priority != priority:
                uniform = False
        else:
            reasons.add(GPU_STATE, _gpu_refusal(gpu, node, request) or "")
    gpus = node.gpus if len(usable) == len(node.gpus) else tuple(usable)
    rank = 0 if node.has_model else 1
    return Candidate(node, gpus, tuple(frees), rank, uniform)


def candidates_for(
    nodes: Sequence[NodeView], request: Request, reasons: Reasons, memo: Memo | None = None
) -> list[Candidate]:
    if memo is not None:
        found = memo.candidates(nodes, request, reasons)
    else:
        found = [c for node in nodes if (c := _node_candidate(node, request, reasons))]
    if request.only_gpus:
        requested = sum(len(candidate.usable) for candidate in found)
        if not requested:
            reasons.notes.append("none of the requested GPUs is on a node that can take it")
    return found


def _best_single(gpus: tuple[GpuView, ...], frees: tuple[int, ...], need: int, spread: bool) -> int:
    """The position of a node's best GPU for one-GPU placement: highest priority, then
    the least free (binpack) or the most free (spread), in ``LEFT_STEP`` steps, then the
    lowest index; -1 if none has room."""
    best = -1
    for position, free in enumerate(frees):
        if free < need:
            continue
        if best < 0:
            best = position
            continue
        gpu, other = gpus[position], gpus[best]
        steps, best_steps = (free - need) // LEFT_STEP, (frees[best] - need) // LEFT_STEP
        if gpu.priority != other.priority:
            better = gpu.priority > other.priority
        elif steps != best_steps:
            better = steps > best_steps if spread else steps < best_steps
        else:
            better = gpu.index < other.index
        if better:
            best = position
    return best


def lowest_priority(slots: tuple[Slot, ...]) -> int:
    return min(gpu.priority for gpu, _free in slots)
