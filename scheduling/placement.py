"""Where an instance goes: a pure function over plain data (no Django, no database).

``place(nodes, request, sizer)`` picks one node and the GPUs on it for one
instance of a model, or refuses with a reason per candidate. Memory is the only
rule: any models may share a GPU. ``sizer`` answers the memory questions (the
real one, over the estimator, is ``scheduling.sizing.EstimatorSizer``).

Attempts, in order, each only when the request allows it; the first that finds a
fit wins:

1. **one GPU**: ``GpuView.free >= sizer.single_gpu_need()`` (one sizer call in all,
   then one ``on_gpus`` call for the chosen GPU's exact figures);
2. **several GPUs on one node** (``allow_multi_gpu``): per node the fewest GPUs
   that fit, taking the node's GPUs with the most free memory first (ties: device
   order), at most ``max_gpus``;
3. **partial CPU offload** (``allow_cpu_offload``): as many layers as fit on the
   node's GPU with the most free memory (with ``allow_multi_gpu``: its ``max_gpus``
   GPUs with the most free memory), the rest in host RAM;
4. **CPU only** (``allow_cpu_offload``): host RAM alone.

Ranking among the fits of one attempt (smaller key first):

- nodes that already hold the model first;
- several GPUs: fewer GPUs first; partial offload: more layers on the GPUs first;
- higher GPU priority (of several GPUs: the lowest priority among them);
- policy: ``binpack`` least memory left after placing (GPU memory; CPU only: RAM),
  ``spread`` fewest ``replicas_here`` first, then most memory left;
- node name, node id, first GPU's index.

Speed: candidates are worked out once per call. Attempt 1 compares numbers only.
Attempt 2 tries nodes in the order of a predicted rank (exact on the first three
ranking criteria, which only get worse when more GPUs are needed) and stops once
the prediction cannot beat the best fit, after ``MULTI_FITS`` fits or after
``MULTI_CALLS`` sizer calls; the policy criterion is therefore the best among
those fits; ``on_gpus`` answers are memoised per call by the free sizes (fleets
have many identical GPUs). Attempt 3 asks the sizer about at most
``PARTIAL_TRIES`` distinct sets of free sizes (of the nodes that hold the model
first, then of those with the most GPU memory); each answer serves every node
with those sizes, whose RAM is then compared with the answer's host bytes.
Attempt 4 asks the sizer once and compares RAM per node. So neither answer may
depend on the node's RAM other than by refusing.

GPUs are given in device order (priority desc, then index) to the sizer and in
the ``Placement``.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

REASON_LIMIT = 20  # specific reason lines in a refusal, then "… and N more" lines
MULTI_FITS = 4  # attempt 2 stops after this many fits of the best predicted rank
MULTI_CALLS = 64  # and after this many sizer calls
PARTIAL_TRIES = 16  # attempt 3 asks the sizer about at most this many sets of free sizes
PLAUSIBLE_SHARE = 0.9  # attempt 3: GPU + host free must be this share of the 1-GPU need

GIB = 1 << 30
MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class GpuView:
    """One GPU as placement sees it; sizes in bytes."""

    id: str  # GPU primary key as text
    node_id: str
    index: int  # NVML index on its node
    name: str  # e.g. "A100-80GB"
    total: int
    reserved: int  # kept free (driver, other programs)
    claimed: int  # claimed by our placed instances
    observed_free: int  # free per NVML right now (total - used)
    priority: int  # higher first
    enabled: bool = True
    present: bool = True
    error: str = ""  # NVML error text; a GPU with an error gets no work
    foreign: int = 0  # used by processes that are not ours (in no claim)

    @property
    def free(self) -> int:
        """Free for placement: ``min(total - reserved - claimed - foreign, observed_free -
        reserved)``. Foreign use counts on the accounting side too: claims of instances
        not started yet are not in the reading, so the reading alone would let them and
        foreign use overlap."""
        reserved = self.reserved
        by_accounting = self.total - reserved - self.claimed - self.foreign
        return max(0, min(by_accounting, self.observed_free - reserved))


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node as placement sees it."""

    id: str
    name: str
    accepts_work: bool  # online (not offline/maintenance/draining)
    labels: Mapping[str, str]
    has_model: bool  # a ready or in-progress copy of the model file is on this node
    can_download: bool  # the model can be downloaded to this node (disk room etc.)
    ram_free: int  # host bytes available (for CPU offload / CPU only)
    gpus: tuple[GpuView, ...]
    replicas_here: int = 0  # instances of this deployment already on this node (for spread)
    status: str = "online"  # for reasons text


class Policy(StrEnum):
    BINPACK = "binpack"
    SPREAD = "spread"


class Kind(StrEnum):
    SINGLE_GPU = "single_gpu"
    MULTI_GPU = "multi_gpu"
    PARTIAL_OFFLOAD = "partial_offload"
    CPU_ONLY = "cpu_only"


@dataclass(frozen=True, slots=True)
class Request:
    """What the deployment allows and asks for."""

    policy: Policy = Policy.BINPACK
    allow_multi_gpu: bool = False
    allow_cpu_offload: bool = False  # allows partial CPU offload AND CPU only
    node_labels: Mapping[str, str] = field(default_factory=dict)  # every label must match
    only_gpus: frozenset[str] = frozenset()  # GPU ids; empty = any
    exclude_gpus: frozenset[str] = frozenset()
    max_gpus: int = 8


@dataclass(frozen=True, slots=True)
class Fit:
    """A sizer's answer: bytes per GPU (in the order given) and on the host."""

    gpu_bytes: tuple[int, ...]
    host_bytes: int
    n_gpu_layers: int  # llama.cpp -ngl value (-1 = everything on GPU)
    tensor_split: tuple[float, ...] | None = None


class Sizer(Protocol):
    """The memory questions placement asks about one model with its run settings."""

    def single_gpu_need(self) -> int:
        """Bytes free one GPU needs to hold all layers (the same for any GPU)."""
        ...

    def on_gpus(self, free: Sequence[int]) -> Fit | None:
        """All layers on GPUs with these free bytes (in order), split by free; None: no fit."""
        ...

    def partial(self, free: Sequence[int], host_free: int) -> Fit | None:
        """The most layers that fit on these GPUs, the rest on the host; None: not even one
        layer fits, or the host does not hold the rest.

        Placement asks once per distinct set of free sizes, with the most ``host_free``
        among the nodes that have them, and checks ``host_bytes`` against each node's
        RAM: the answer must not depend on ``host_free`` other than by being None."""
        ...

    def cpu_only(self, host_free: int) -> Fit | None:
        """Everything on the host; None if it needs more than ``host_free``.

        Asked once, with the most RAM of any node; ``host_bytes`` is compared per node."""
        ...


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the instance goes and what it claims."""

    node_id: str
    kind: Kind
    gpu_ids: tuple[str, ...]  # in device order: priority desc, then index
    gpu_bytes: tuple[int, ...]  # claim per GPU, same order
    host_bytes: int
    n_gpu_layers: int
    tensor_split: tuple[float, ...] | None
    needs_download: bool  # node lacks the model file


@dataclass(frozen=True, slots=True)
class Refusal:
    """No fit: human text per candidate (bounded), most useful first."""

    reasons: tuple[str, ...]


# --- reasons ------------------------------------------------------------------------

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


class _Reasons:
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


def _size(size: int) -> str:
    return f"{size / GIB:.1f} GiB" if abs(size) >= GIB else f"{size / MIB:.0f} MiB"


def _gpu_label(gpu: GpuView, node: NodeView) -> str:
    return f"GPU {gpu.index} on {node.name}"


# --- candidates ---------------------------------------------------------------------

Slot = tuple[GpuView, int]  # a usable GPU and its free bytes
Key = tuple[object, ...]  # a ranking key: smaller is better


@dataclass(slots=True)
class _Candidate:
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
                left = self.frees[position] - need
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
        return _min_priority(self.by_free[:count])


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
        return f"{_gpu_label(gpu, node)} is excluded by the request"
    if not gpu.enabled:
        return f"{_gpu_label(gpu, node)} is disabled"
    if not gpu.present:
        return f"{_gpu_label(gpu, node)} is missing"
    if gpu.error:
        return f"{_gpu_label(gpu, node)} reports an error: {gpu.error}"
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
        self._nodes: dict[int, tuple[NodeView, _Candidate | None, list[tuple[str, str]]]] = {}

    def candidates(
        self, nodes: Sequence[NodeView], request: Request, reasons: _Reasons
    ) -> list[_Candidate]:
        if request != self.request:
            self.request, self._nodes = request, {}
        found: list[_Candidate] = []
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


def _node_candidate(node: NodeView, request: Request, reasons: _Sink) -> _Candidate | None:
    refusal = _node_refusal(node, request)
    if refusal is not None:
        reasons.add(*refusal)
        return None
    return _candidate(node, request, reasons)


def _candidate(node: NodeView, request: Request, reasons: _Sink) -> _Candidate:
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
    return _Candidate(node, gpus, tuple(frees), rank, uniform)


def _candidates(
    nodes: Sequence[NodeView], request: Request, reasons: _Reasons, memo: Memo | None = None
) -> list[_Candidate]:
    if memo is not None:
        found = memo.candidates(nodes, request, reasons)
    else:
        found = [c for node in nodes if (c := _node_candidate(node, request, reasons))]
    if request.only_gpus:
        requested = sum(len(candidate.usable) for candidate in found)
        if not requested:
            reasons.notes.append("none of the requested GPUs is on a node that can take it")
    return found


# --- the search ---------------------------------------------------------------------

Option = tuple[Key, _Candidate, tuple[Slot, ...], Fit]


def _best_single(gpus: tuple[GpuView, ...], frees: tuple[int, ...], need: int, spread: bool) -> int:
    """The position of a node's best GPU for one-GPU placement: highest priority, then
    the least free (binpack) or the most free (spread), then the lowest index; -1 if
    none has room."""
    best = -1
    for position, free in enumerate(frees):
        if free < need:
            continue
        if best < 0:
            best = position
            continue
        gpu, other = gpus[position], gpus[best]
        if gpu.priority != other.priority:
            better = gpu.priority > other.priority
        elif free != frees[best]:
            better = free > frees[best] if spread else free < frees[best]
        else:
            better = gpu.index < other.index
        if better:
            best = position
    return best


def _policy_key(request: Request, node: NodeView, left: int) -> tuple[int, ...]:
    if request.policy is Policy.SPREAD:
        return (node.replicas_here, -left)
    return (left,)


def _tail(candidate: _Candidate, slots: tuple[Slot, ...]) -> tuple[object, ...]:
    first = slots[0][0].index if slots else -1
    return (candidate.node.name, candidate.node.id, first)


def _left(slots: tuple[Slot, ...], fit: Fit) -> int:
    return sum(free for _gpu, free in slots) - sum(fit.gpu_bytes)


def _min_priority(slots: tuple[Slot, ...]) -> int:
    return min(gpu.priority for gpu, _free in slots)


class _Search:
    """One ``place`` call: the candidates, memoised sizer answers, the attempts."""

    def __init__(
        self, candidates: list[_Candidate], request: Request, sizer: Sizer, reasons: _Reasons
    ) -> None:
        self.candidates = candidates
        self.request = request
        self.sizer = sizer
        self.reasons = reasons
        self.max_gpus = max(request.max_gpus, 0)
        has_gpus = self.max_gpus > 0 and any(c.usable for c in candidates)
        self.need = sizer.single_gpu_need() if has_gpus else None
        self._on_gpus: dict[tuple[int, ...], Fit | None] = {}
        self.tried_multi: set[str] = set()
        self.tried_partial: set[str] = set()

    def on_gpus(self, slots: tuple[Slot, ...]) -> Fit | None:
        free = tuple(free for _gpu, free in slots)
        if free not in self._on_gpus:
            self._on_gpus[free] = self.sizer.on_gpus(free)
        return self._on_gpus[free]

    def attempts(self) -> list[Callable[[], Placement | None]]:
        steps: list[Callable[[], Placement | None]] = []
        if self.need is not None:
            steps.append(self.single)
            if self.request.allow_multi_gpu and self.max_gpus > 1:
                steps.append(self.multi)
            if self.request.allow_cpu_offload:
                steps.append(self.offload)
        if self.request.allow_cpu_offload:
            steps.append(self.cpu_only)
        return steps

    # attempt 1 ------------------------------------------------------------------
    def single(self) -> Placement | None:
        failed: set[int] = set()
        while len(failed) < 4:  # a sizer may refuse what its need promised: the next best
            best = self._best_single(failed)
            if best is None:
                return None
            candidate, position = best
            slot = (candidate.usable[position], candidate.frees[position])
            fit = self.on_gpus((slot,))
            if fit is not None:
                return _placement(candidate, (slot,), fit, Kind.SINGLE_GPU)
            failed.add(id(candidate))
        return None

    def _best_single(self, failed: set[int]) -> tuple[_Candidate, int] | None:
        """The best (candidate, GPU position) for one GPU; keys are built per node only."""
        need = self.need
        assert need is not None
        policy = self.request.policy
        best: tuple[_Candidate, int] | None = None
        best_key: Key | None = None
        for candidate in self.candidates:
            position, key = candidate.best_single(need, policy)
            if key is None or id(candidate) in failed:
                continue
            if best_key is None or key < best_key:
                best, best_key = (candidate, position), key
        return best

    # attempt 2 ------------------------------------------------------------------
    def multi(self) -> Placement | None:
        need = self.need
        assert need is not None
        plans: list[tuple[Key, _Candidate, int]] = []
        for candidate in self.candidates:
            count = candidate.min_gpus(need, self.max_gpus)
            if count is not None:
                plans.append((self._predicted(candidate, count, need), candidate, count))
        plans.sort(key=lambda plan: plan[0])
        best: Option | None = None
        fits = calls = 0
        for predicted, candidate, count in plans:
            if best is not None and (predicted[:3] > best[0][:3] or fits >= MULTI_FITS):
                break
            if calls >= MULTI_CALLS:
                break
            option, used = self._multi_on(candidate, count)
            calls += used
            self.tried_multi.add(candidate.node.id)
            if option is not None:
                fits += 1
                best = option if best is None or option[0] < best[0] else best
        return None if best is None else _placement(*best[1:], Kind.MULTI_GPU)

    def _predicted(self, candidate: _Candidate, count: int, need: int) -> Key:
        left = sum(candidate.sorted_frees[:count]) - need
        policy = _policy_key(self.request, candidate.node, left)
        priority = candidate.min_priority(count)
        return (candidate.rank, count, -priority, *policy, *_tail(candidate, ()))

    def _multi_on(self, candidate: _Candidate, count: int) -> tuple[Option | None, int]:
        """The fewest GPUs from ``count`` up that hold it on this node, and the sizer calls."""
        calls = 0
        limit = min(self.max_gpus, len(candidate.usable))
        for size in range(count, limit + 1):
            slots = candidate.top(size)
            calls += tuple(free for _gpu, free in slots) not in self._on_gpus
            fit = self.on_gpus(slots)
            if fit is not None:
                policy = _policy_key(self.request, candidate.node, _left(slots, fit))
                key = (candidate.rank, size, -_min_priority(slots), *policy)
                return ((*key, *_tail(candidate, slots)), candidate, slots, fit), calls
        return None, calls

    # attempt 3 ------------------------------------------------------------------
    def offload_count(self, candidate: _Candidate) -> int:
        """How many of a node's GPUs take layers: all (at most ``max_gpus``) or one."""
        if not self.request.allow_multi_gpu:
            return min(1, len(candidate.usable))
        return min(self.max_gpus, len(candidate.usable))

    def offload_slots(self, candidate: _Candidate) -> tuple[Slot, ...]:
        """The GPUs that take layers, in device order (those with free memory)."""
        count = self.offload_count(candidate)
        return tuple(slot for slot in candidate.top(count) if slot[1] > 0)

    def _offload_sizes(self, candidate: _Candidate) -> tuple[int, ...]:
        if self.offload_count(candidate) == 1:  # the common case, without building slots
            return (candidate.sorted_frees[0],) if candidate.sorted_frees[0] > 0 else ()
        return tuple(free for _gpu, free in self.offload_slots(candidate))

    def offload_groups(self) -> dict[tuple[int, ...], list[_Candidate]]:
        """Plausible nodes by their GPUs' free sizes: the ``PARTIAL_TRIES`` sizes of the
        best nodes (holding the model, then most GPU memory), each with every node that
        has them."""
        need = self.need
        assert need is not None
        plans: list[tuple[Key, _Candidate]] = []
        for candidate in self.candidates:
            if not candidate.usable:
                continue
            gpu_free = sum(candidate.sorted_frees[: self.offload_count(candidate)])
            if gpu_free and gpu_free + candidate.node.ram_free >= need * PLAUSIBLE_SHARE:
                plans.append(((candidate.rank, -gpu_free, *_tail(candidate, ())), candidate))
        plans.sort(key=lambda plan: plan[0])
        groups: dict[tuple[int, ...], list[_Candidate]] = {}
        for _key, candidate in plans:
            sizes = self._offload_sizes(candidate)
            if sizes in groups or len(groups) < PARTIAL_TRIES:
                groups.setdefault(sizes, []).append(candidate)
        return groups

    def offload(self) -> Placement | None:
        """One sizer answer per group; every member ranked on it (slots built for the best)."""
        best: tuple[Key, _Candidate, Fit] | None = None
        for sizes, members in self.offload_groups().items():
            fit = self.sizer.partial(sizes, max(member.node.ram_free for member in members))
            self.tried_partial.update(member.node.id for member in members)
            if fit is None:
                continue
            layers = fit.n_gpu_layers if fit.n_gpu_layers >= 0 else 1 << 30
            left = sum(sizes) - sum(fit.gpu_bytes)
            for candidate in members:
                if fit.host_bytes > candidate.node.ram_free:
                    continue
                policy = _policy_key(self.request, candidate.node, left)
                priority = candidate.min_priority(len(sizes))
                key = (candidate.rank, -layers, -priority, *policy, *_tail(candidate, ()))
                if best is None or key < best[0]:
                    best = (key, candidate, fit)
        if best is None:
            return None
        _key, candidate, fit = best
        return _placement(candidate, self.offload_slots(candidate), fit, Kind.PARTIAL_OFFLOAD)

    # attempt 4 ------------------------------------------------------------------
    def cpu_nodes(self) -> list[_Candidate]:
        """Candidates for CPU only: with ``only_gpus``, only nodes holding one of them."""
        if not self.request.only_gpus:
            return self.candidates
        return [candidate for candidate in self.candidates if candidate.usable]

    def cpu_only(self) -> Placement | None:
        nodes = self.cpu_nodes()
        if not nodes:
            return None
        fit = self.sizer.cpu_only(max(candidate.node.ram_free for candidate in nodes))
        if fit is None:
            return None
        best: tuple[Key, _Candidate] | None = None
        for candidate in nodes:
            left = candidate.node.ram_free - fit.host_bytes
            if left >= 0:
                policy = _policy_key(self.request, candidate.node, left)
                key = (candidate.rank, *policy, *_tail(candidate, ()))
                best = (key, candidate) if best is None or key < best[0] else best
        return None if best is None else _placement(best[1], (), fit, Kind.CPU_ONLY)


def _placement(candidate: _Candidate, slots: tuple[Slot, ...], fit: Fit, kind: Kind) -> Placement:
    if len(fit.gpu_bytes) != len(slots):
        raise ValueError(f"the sizer gave {len(fit.gpu_bytes)} GPU sizes for {len(slots)} GPUs")
    return Placement(
        node_id=candidate.node.id,
        kind=kind,
        gpu_ids=tuple(gpu.id for gpu, _free in slots),
        gpu_bytes=fit.gpu_bytes,
        host_bytes=fit.host_bytes,
        n_gpu_layers=fit.n_gpu_layers,
        tensor_split=fit.tensor_split,
        needs_download=not candidate.node.has_model,
    )


# --- refusal ------------------------------------------------------------------------


def _room_reasons(search: _Search) -> None:
    """Why the candidates that were looked at did not fit, nearest misses first."""
    reasons, need = search.reasons, search.need
    for candidate in search.candidates:
        if not candidate.node.gpus:
            reasons.add(GPU_STATE, f"{candidate.node.name} has no GPUs")
    if need is not None:
        slots = [(free, c.node, gpu) for c in search.candidates for gpu, free in c.gpus]
        nearest = heapq.nlargest(REASON_LIMIT, slots, key=lambda item: item[0])
        texts = [
            f"{_gpu_label(gpu, node)}: needs {_size(need)}, {_size(free)} free"
            for free, node, gpu in nearest
        ]
        reasons.add_many(GPU_ROOM, texts, len(slots))
    if need is not None and search.request.allow_multi_gpu and search.max_gpus > 1:
        _multi_reasons(search, need)
    if need is not None and search.request.allow_cpu_offload:
        _partial_reasons(search)
    if search.request.allow_cpu_offload:
        _cpu_reasons(search)


def _multi_reasons(search: _Search, need: int) -> None:
    for candidate in search.candidates:
        if len(candidate.usable) < 2:
            continue
        count = min(search.max_gpus, len(candidate.usable))
        together = sum(free for _gpu, free in candidate.by_free[:count])
        name, room = candidate.node.name, f"{_size(together)} free together"
        if candidate.node.id in search.tried_multi:
            text = f"{name}: does not fit on {count} GPUs ({room})"
        elif candidate.min_gpus(need, count) is not None:
            text = f"{name}: not tried on several GPUs ({room}; at most {MULTI_CALLS} estimates)"
        else:
            text = f"{name}: {count} GPUs have {room}, needs {_size(need)}"
        search.reasons.add(MULTI_ROOM, text)


def _partial_reasons(search: _Search) -> None:
    for candidate in search.candidates:
        slots = search.offload_slots(candidate) if candidate.usable else ()
        if not slots:
            continue
        gpu_free, ram = sum(free for _gpu, free in slots), candidate.node.ram_free
        room = f"{_size(gpu_free)} free on GPUs, {_size(ram)} RAM"
        if candidate.node.id in search.tried_partial:
            text = "partial offload does not fit"
        elif gpu_free + ram >= (search.need or 0) * PLAUSIBLE_SHARE:
            text = f"not tried for partial offload (the best {PARTIAL_TRIES} GPU sizes are)"
        else:
            text = "too little memory for partial offload"
        search.reasons.add(PARTIAL_ROOM, f"{candidate.node.name}: {text} ({room})")


def _cpu_reasons(search: _Search) -> None:
    nodes = search.cpu_nodes()
    if not nodes:
        return
    fit = search.sizer.cpu_only(1 << 62)
    for candidate in sorted(nodes, key=lambda c: -c.node.ram_free):
        ram = _size(candidate.node.ram_free)
        needs = "" if fit is None else f"needs {_size(fit.host_bytes)} RAM, "
        search.reasons.add(CPU_ROOM, f"{candidate.node.name}: CPU only {needs}{ram} free")


def _refusal(search: _Search) -> Refusal:
    reasons, request = search.reasons, search.request
    _room_reasons(search)
    if not search.candidates:
        reasons.notes.insert(0, "no node can take it")
    if not request.allow_multi_gpu:
        reasons.notes.append("splitting across GPUs is not allowed")
    if not request.allow_cpu_offload:
        reasons.notes.append("CPU offload is not allowed")
    return Refusal(reasons.lines())


def place(
    nodes: Sequence[NodeView], request: Request, sizer: Sizer, memo: Memo | None = None
) -> Placement | Refusal:
    """The best place for one instance (see the module docstring), or why there is none.

    ``memo``: reuse the work on nodes whose views did not change since the last call
    with the same request and memo (the answer is the same as without it)."""
    reasons = _Reasons()
    search = _Search(_candidates(nodes, request, reasons, memo), request, sizer, reasons)
    for attempt in search.attempts():
        placement = attempt()
        if placement is not None:
            return placement
    return _refusal(search)
